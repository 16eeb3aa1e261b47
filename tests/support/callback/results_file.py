# Test-only callback: appends every task result to the JSON-lines file in $CLOUDHV_RESULTS_FILE
# so tests can assert on changed/diff/failed/msg per task and host.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
name: results_file
type: aggregate
short_description: write task results as JSON lines (tests only)
description: Writes one JSON object per task result to the file named by CLOUDHV_RESULTS_FILE.
requirements: [enable in configuration]
'''

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'results_file'
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, status):
        path = os.environ.get('CLOUDHV_RESULTS_FILE')
        if not path:
            return
        res = dict(result._result)
        entry = dict(task=result._task.get_name(), host=result._host.get_name(),
                     action=result._task.action, status=status, result=res)
        with open(path, 'a') as handle:
            handle.write(json.dumps(entry, default=str) + '\n')

    def v2_runner_on_ok(self, result):
        self._write(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write(result, 'failed')

    def v2_runner_on_skipped(self, result):
        self._write(result, 'skipped')

    def v2_runner_on_unreachable(self, result):
        self._write(result, 'unreachable')
