"""Import, first step: `parse(text)` reads the YAML into its lists by section, or raises ServicesFileError."""

from __future__ import annotations

from typing import Any

import yaml

from monitor.services_io.plan import ServicesFileError
from monitor.services_io.sections import BY_KEY, type_name

MAX_FILE_BYTES = 10 * 1024 * 1024  # a file of 10,000 services is about 1 MB; more is a mistake


class _Loader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"found the key {key!r} twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def parse(text: str) -> dict[str, list[Any]]:
    """Return the file's lists by section key; raise ServicesFileError for bad YAML or a bad shape.

    A bare list is the format from before alerting: services only.
    """
    if len(text.encode()) > MAX_FILE_BYTES:
        raise ServicesFileError([f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB."])
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        raise ServicesFileError([_yaml_error(error)]) from None
    except yaml.YAMLError as error:
        raise ServicesFileError([f"Not valid YAML: {error}"]) from None
    if isinstance(document, list):
        return {"services": document}
    if not isinstance(document, dict):
        found = "empty" if document is None else f"a {type_name(document)}"
        raise ServicesFileError([f"The file must be a mapping with a `services:` list, but it is {found}."])
    unknown = [str(key) for key in document if key not in BY_KEY]
    if unknown:
        raise ServicesFileError(
            [f"Unknown top-level key {', '.join(map(repr, unknown))}: the keys are {', '.join(BY_KEY)}."]
        )
    if "services" not in document:
        raise ServicesFileError(["The file has no `services:` list."])
    lists: dict[str, list[Any]] = {}
    for key, entries in document.items():
        if entries is None:  # `channels:` with every entry commented out
            entries = []
        if not isinstance(entries, list):
            raise ServicesFileError([f"`{key}:` must be a list of {key}, not a {type_name(entries)}."])
        lists[key] = entries
    return lists


def _yaml_error(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = " ".join(part for part in (error.context, error.problem) if part)
    return f"Not valid YAML: {where}{problem}."
