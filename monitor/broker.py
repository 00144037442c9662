"""The embedded mode's broker: kombu's filesystem transport, with messages that appear in the folder whole.

Exposes `Transport`, named by `CELERY_BROKER_TRANSPORT` when no REDIS_URL is set.

kombu's own transport creates a message's file and then writes it; a consumer listing the folder
in between moves the empty file away and fails to decode it, which stops the worker
("Unrecoverable error: JSONDecodeError"). Under the load of a few hundred services the window is
hit within minutes. Here a message is written under a name no consumer picks up and renamed into
place, which is atomic on one filesystem.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL = ".part"  # consumers take only names ending in ".<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        """Put `payload` onto `queue`: write it aside, then rename it into the folder in one step."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL
        try:
            with open(partial, "wb") as stream:
                stream.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as error:
            raise ChannelError(f"Cannot add file {final!r} to directory") from error


class Transport(filesystem.Transport):
    Channel = Channel
