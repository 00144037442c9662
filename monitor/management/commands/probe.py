"""`manage.py probe URL`: probe one service from the command line, as a person or a Nagios plugin would."""

from __future__ import annotations

import argparse
import sys

from django.core.management.base import BaseCommand

from monitor import probecli


class Command(BaseCommand):
    help = "Probe one service, e.g. `probe smtps://mail.example.com`. Exit 0 up, 1 warning, 2 down, 3 unknown."
    requires_system_checks = []

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # argparse exits 2 on a bad flag, which Nagios reads as CRITICAL; a usage error is UNKNOWN.
        argparse_exit = parser.exit
        parser.exit = lambda status=0, message=None: argparse_exit(probecli.UNKNOWN if status == 2 else status, message)
        return parser

    def add_arguments(self, parser):
        probecli.add_arguments(parser)

    def handle(self, *args, **options):
        code = probecli.run(argparse.Namespace(**options), self.stdout)
        if code:
            sys.exit(code)
