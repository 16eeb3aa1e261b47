# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark-only callback: appends one JSON line per task start, loop item and task result to the
file named by BENCH_TIMING_LOG (wall-clock seconds, host, item label, changed), so bench/scale.py
and bench/multihost.py can compute per-VM times and see whether they grow with the VM's index."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = '''
name: bench_timing
type: aggregate
short_description: timestamps of tasks and loop items, for cloudhv.ch's benchmarks
description: Writes JSON lines to the file in the BENCH_TIMING_LOG environment variable.
requirements: [enable in ansible.cfg or ANSIBLE_CALLBACKS_ENABLED]
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timing'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.path = os.environ.get('BENCH_TIMING_LOG')

    def _emit(self, **event):
        if not self.path:
            return
        event['t'] = time.time()
        event['load'] = os.getloadavg()[0]
        with open(self.path, 'a') as handle:
            handle.write(json.dumps(event) + '\n')

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._emit(event='task_start', task=task.get_name())

    def _item(self, result, status):
        item = result._result.get('_ansible_item_label', result._result.get('item'))
        if isinstance(item, dict):
            item = item.get('name', json.dumps(item, sort_keys=True))
        self._emit(event='item', status=status, host=result._host.get_name(), task=result._task.get_name(),
                   item=item, changed=bool(result._result.get('changed')))

    def v2_runner_item_on_ok(self, result):
        self._item(result, 'ok')

    def v2_runner_item_on_failed(self, result):
        self._item(result, 'failed')

    def _result(self, result, status):
        self._emit(event='result', status=status, host=result._host.get_name(), task=result._task.get_name(),
                   changed=bool(result._result.get('changed')))

    def v2_runner_on_ok(self, result):
        self._result(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'failed')

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')

    def v2_playbook_on_stats(self, stats):
        self._emit(event='stats', hosts=dict((h, stats.summarize(h)) for h in sorted(stats.processed)))
