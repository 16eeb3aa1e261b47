"""Fake ``systemd-run`` and ``systemctl`` for tests on hosts whose PID 1 is not systemd.

They implement exactly the subset ``launcher: systemd`` uses (plugins/module_utils/vmm.py), and
refuse anything else, so a change in what vmm.py runs shows up as a failing test:

    systemd-run --unit=U [--collect] [--quiet] [--no-ask-password] [--service-type=simple|exec]
                [--working-directory=DIR] [--description=TEXT] [--property=NAME=VALUE ...]
                [--setenv=NAME=VALUE ...] [--] COMMAND [ARGS...]
        properties: UMask, KillMode, StandardOutput and StandardError (append:PATH only)
    systemctl [--no-ask-password] [--quiet] show --property=MainPID --value U
    systemctl [--no-ask-password] [--quiet] is-active U | reset-failed U | stop U

Like systemd, the command runs detached from the caller (new session, stdin /dev/null, its own
umask and working directory, stdout/stderr appended to the given file, the environment of "the
manager" - a plain PATH - plus --setenv, never the caller's), a unit name that is loaded is
refused, and a unit whose process is gone is unloaded with --collect and "failed" without it.

State lives in $FAKE_SYSTEMD_DIR: ``calls.jsonl`` (one {"prog", "argv"} per invocation) and
``units/<unit>.json`` (MainPID, command, properties, environment). Knob: FAKE_SYSTEMD_RUN_FAIL=<msg>
makes systemd-run print <msg> and exit 1 without starting anything.

    fake = FakeSystemd.install(tmp_path / 'fake-systemd')
    monkeypatch.setenv('PATH', fake.path()); monkeypatch.setenv('FAKE_SYSTEMD_DIR', fake.state_dir)
    ... fake.calls('systemctl'), fake.unit('cloudhv-vmm-vm.service')
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
MANAGER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
PROPERTIES = ('UMask', 'KillMode', 'StandardOutput', 'StandardError')

SCRIPT = """#!{python}
# fake {prog} for cloudhv.ch tests (written by {source})
import sys
sys.path.insert(0, {here!r})
import fake_systemd
sys.exit(fake_systemd.{func}(sys.argv[1:]))
"""


class FakeSystemd(object):
    """The installed fakes: ``bin_dir`` (put it first on PATH) and ``state_dir``."""

    def __init__(self, bin_dir, state_dir):
        self.bin_dir = bin_dir
        self.state_dir = state_dir

    @classmethod
    def install(cls, root):
        root = os.fspath(root)
        bin_dir = os.path.join(root, 'bin')
        state_dir = os.path.join(root, 'state')
        os.makedirs(bin_dir, exist_ok=True)
        os.makedirs(os.path.join(state_dir, 'units'), exist_ok=True)
        for prog, func in (('systemd-run', 'systemd_run'), ('systemctl', 'systemctl')):
            path = os.path.join(bin_dir, prog)
            with open(path, 'w') as handle:
                handle.write(SCRIPT.format(python=sys.executable, prog=prog, func=func, here=HERE,
                                           source=os.path.abspath(__file__)))
            os.chmod(path, 0o755)
        return cls(bin_dir, state_dir)

    def path(self, rest=None):
        """A PATH with the fakes first."""
        return self.bin_dir + os.pathsep + (os.environ.get('PATH', '') if rest is None else rest)

    def env(self, rest_of_path=None):
        return {'PATH': self.path(rest_of_path), 'FAKE_SYSTEMD_DIR': self.state_dir}

    def calls(self, prog=None):
        """argv lists (without the program) of every call, oldest first."""
        return [c['argv'] for c in _read_calls(self.state_dir) if prog is None or c['prog'] == prog]

    def unit(self, name):
        """The unit's record while systemd would have it loaded (else None)."""
        return _current(self.state_dir, name)

    def seed_failed_unit(self, name):
        """A unit left in failed state (its process gone, not collected), as systemd would keep it."""
        _save(self.state_dir, name, {'unit': name, 'pid': 0, 'start': None, 'collect': False,
                                     'command': ['/bin/false'], 'properties': {}, 'environment': {}})


# -- state ----------------------------------------------------------------------------------
def _state_dir():
    path = os.environ.get('FAKE_SYSTEMD_DIR')
    if not path:
        sys.stderr.write('fake systemd: FAKE_SYSTEMD_DIR is not set\n')
        sys.exit(2)
    os.makedirs(os.path.join(path, 'units'), exist_ok=True)
    return path


def _record_call(state_dir, prog, argv):
    line = json.dumps({'prog': prog, 'argv': list(argv)}) + '\n'
    fd = os.open(os.path.join(state_dir, 'calls.jsonl'), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _read_calls(state_dir):
    try:
        with open(os.path.join(state_dir, 'calls.jsonl')) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except (IOError, OSError):
        return []


def _unit_path(state_dir, name):
    return os.path.join(state_dir, 'units', name.replace('/', '_') + '.json')


def _load(state_dir, name):
    try:
        with open(_unit_path(state_dir, name)) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def _save(state_dir, name, record):
    path = _unit_path(state_dir, name)
    with open(path + '.tmp', 'w') as handle:
        json.dump(record, handle)
    os.rename(path + '.tmp', path)


def _drop(state_dir, name):
    try:
        os.unlink(_unit_path(state_dir, name))
    except OSError:
        pass


def _start_time(pid):
    """(state letter, start time) of a process, or None when there is none."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except (IOError, OSError):
        return None
    fields = stat[stat.rindex(')') + 2:].split()
    return fields[0], fields[19]


def _alive(record):
    """The unit's main process still runs (not a zombie, and not a reused pid)."""
    if not record or not record.get('pid'):
        return False
    found = _start_time(record['pid'])
    return bool(found) and found[0] not in 'ZX' and found[1] == record.get('start')


def _current(state_dir, name):
    """The unit's record, or None when it is not loaded (gone and collected)."""
    record = _load(state_dir, name)
    if record and not _alive(record) and record.get('collect'):
        _drop(state_dir, name)
        return None
    return record


# -- systemd-run ----------------------------------------------------------------------------
def _fail(message, code=1):
    sys.stderr.write(message.rstrip('\n') + '\n')
    return code


def _parse_run(argv):
    opts = {'unit': None, 'collect': False, 'quiet': False, 'service_type': 'simple',
            'working_directory': None, 'properties': {}, 'setenv': {}}
    args = list(argv)
    while args and args[0].startswith('-'):
        arg = args.pop(0)
        if arg == '--':
            break
        name, _eq, value = arg.partition('=')
        if arg in ('--collect', '--quiet', '--no-ask-password'):
            opts[arg[2:].replace('-', '_')] = True
        elif name in ('--unit', '--service-type', '--working-directory', '--description') and _eq:
            opts[name[2:].replace('-', '_')] = value
        elif name == '--property' and '=' in value:
            key, _eq2, val = value.partition('=')
            if key not in PROPERTIES:
                raise ValueError('fake systemd-run: unsupported property %s' % key)
            opts['properties'][key] = val
        elif name == '--setenv' and '=' in value:
            key, _eq2, val = value.partition('=')
            opts['setenv'][key] = val
        else:
            raise ValueError("systemd-run: unrecognized option '%s'" % arg)
    if not args:
        raise ValueError('systemd-run: command line to execute required')
    if not opts['unit']:
        raise ValueError('fake systemd-run: only --unit=NAME runs are supported')
    if opts['service_type'] not in ('simple', 'exec'):
        raise ValueError('fake systemd-run: unsupported --service-type=%s' % opts['service_type'])
    return opts, args


def _append_target(value):
    if value is None:
        return None
    if not value.startswith('append:'):
        raise ValueError('fake systemd-run: only append:PATH is supported for output, not %s' % value)
    return value[len('append:'):]


def _spawn(opts, command):
    """Start the command the way the service manager would; return its pid."""
    props = opts['properties']
    os.umask(int(props.get('UMask', '0022'), 8))
    env = {'PATH': MANAGER_PATH, 'INVOCATION_ID': uuid.uuid4().hex}
    env.update(opts['setenv'])
    outputs = []
    for key in ('StandardOutput', 'StandardError'):
        path = _append_target(props.get(key))
        outputs.append(open(path, 'ab') if path else open(os.devnull, 'wb'))
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=outputs[0], stderr=outputs[1],
                                close_fds=True, start_new_session=True, env=env,
                                cwd=opts['working_directory'] or '/')
    finally:
        for handle in outputs:
            handle.close()
    return proc.pid


def systemd_run(argv):
    state_dir = _state_dir()
    _record_call(state_dir, 'systemd-run', argv)
    if os.environ.get('FAKE_SYSTEMD_RUN_FAIL'):
        return _fail(os.environ['FAKE_SYSTEMD_RUN_FAIL'])
    try:
        opts, command = _parse_run(argv)
    except ValueError as exc:
        return _fail(str(exc))
    unit = opts['unit']
    if _current(state_dir, unit) is not None:
        return _fail('Failed to start transient service unit: Unit %s was already loaded or has a '
                     'fragment file.' % unit)
    try:
        pid = _spawn(opts, command)
    except (OSError, ValueError) as exc:
        return _fail('Job for %s failed because the control process exited with error code. (%s)'
                     % (unit, exc))
    _save(state_dir, unit, {'unit': unit, 'pid': pid, 'start': (_start_time(pid) or (None, None))[1],
                            'collect': opts['collect'], 'command': command,
                            'properties': opts['properties'], 'environment': opts['setenv'],
                            'working_directory': opts['working_directory'],
                            'service_type': opts['service_type']})
    if not opts['quiet']:
        sys.stderr.write('Running as unit: %s\n' % unit)
    return 0


# -- systemctl ------------------------------------------------------------------------------
def _stop(state_dir, unit, record):
    if _alive(record):
        os.kill(record['pid'], signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _alive(record) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _alive(record):
            os.kill(record['pid'], signal.SIGKILL)
    _drop(state_dir, unit)


def systemctl(argv):
    state_dir = _state_dir()
    _record_call(state_dir, 'systemctl', argv)
    flags = [a for a in argv if a.startswith('-')]
    words = [a for a in argv if not a.startswith('-')]
    unknown = [f for f in flags if f not in ('--no-ask-password', '--quiet', '--value', '--property=MainPID')]
    if unknown or len(words) != 2:
        return _fail('fake systemctl: unsupported call: %s' % ' '.join(argv))
    verb, unit = words
    record = _current(state_dir, unit)
    if verb == 'show':
        if set(flags) - {'--no-ask-password'} != {'--value', '--property=MainPID'}:
            return _fail('fake systemctl: only show --property=MainPID --value is supported')
        print(record['pid'] if _alive(record) else 0)
        return 0
    if verb == 'is-active':
        state = 'active' if _alive(record) else ('failed' if record else 'inactive')
        if '--quiet' not in flags:
            print(state)
        return 0 if state == 'active' else 3
    if verb == 'reset-failed':
        if record is None:
            return _fail('Failed to reset failed state of unit %s: Unit %s not loaded.' % (unit, unit))
        if not _alive(record):
            _drop(state_dir, unit)
        return 0
    if verb == 'stop':
        if record is None:
            return _fail('Failed to stop %s: Unit %s not loaded.' % (unit, unit), 5)
        _stop(state_dir, unit, record)
        return 0
    return _fail('fake systemctl: unsupported verb %s' % verb)
