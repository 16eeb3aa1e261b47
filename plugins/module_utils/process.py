# -*- coding: utf-8 -*-
# Copyright: cloudhv.ch contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Long-running helper processes the collection starts and leaves running after the module
exits (the VMMs, one dnsmasq per bridge): detached start, pid files, PID-reuse-safe liveness,
and the end of a process.

* :func:`spawn_detached`: new session, stdin /dev/null, stdout and stderr appended to a log
  file, no inherited fds, cwd /, a given umask; the pid file is written once it runs.
* liveness survives PID reuse: a pid file only counts when /proc/<pid>/cmdline names the
  process's own key (the VMM's API socket, dnsmasq's configuration file) and, when given, the
  binary (:func:`running_pid`).
* :func:`terminate`: SIGTERM, then SIGKILL, waiting for the process to be gone.
No Ansible imports here.
"""


import errno
import os
import signal
import subprocess
import time


LOG_TAIL = 20         # lines of a log shown when a start fails
POLL = 0.02


def read_pid(pid_file):
    try:
        with open(pid_file) as handle:
            text = handle.read().strip()
    except (IOError, OSError):
        return None
    try:
        pid = int(text)
    except ValueError:
        return None
    return pid if pid > 0 else None


def write_pid(path, pid):
    tmp = '%s.tmp.%d' % (path, os.getpid())
    with open(tmp, 'w') as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write('%d\n' % pid)
    os.rename(tmp, path)


def _task_dead(path):
    """A /proc/.../stat file says zombie or dead (the state letter follows the parenthesised
    command name), or cannot be read."""
    try:
        with open(path) as handle:
            stat = handle.read()
    except (IOError, OSError):
        return True
    try:
        return stat[stat.rindex(')') + 2] in 'ZX'
    except (ValueError, IndexError):
        return True


def proc_cmdline(pid):
    """argv of a live (non-zombie) process, or None."""
    if _task_dead('/proc/%d/stat' % pid):
        return None
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            raw = handle.read()
    except (IOError, OSError):
        return None
    if not raw:
        return None
    return [a.decode('utf-8', 'replace') for a in raw.rstrip(b'\0').split(b'\0')]


def process_gone(pid):
    """No such process, or only its zombie is left (its files are closed by then).

    A multi-threaded process (CH is one) whose main thread has exited shows as a zombie while its
    other threads are still exiting, and they hold its files (the API socket) until the last one
    is gone: every thread must be dead, not only the main one."""
    if not _task_dead('/proc/%d/stat' % pid):
        return False
    try:
        tasks = os.listdir('/proc/%d/task' % pid)
    except OSError:
        return True
    return all(_task_dead('/proc/%d/task/%s/stat' % (pid, tid)) for tid in tasks)


def cmdline_matches(argv, key, binary=None):
    """Does this argv belong to the process identified by ``key`` (a path given as an argument,
    alone, as ``--opt=<key>`` or as ``path=<key>`` in a comma list), and ``binary`` when given?

    Interpreted stand-ins (a script with a shebang) show up as ``<interpreter> <script> ...``,
    so the binary may be argv[0] or argv[1]."""
    if not argv:
        return False
    if not any(a == key or a.endswith('=' + key) or ('path=%s' % key) in a.split(',') for a in argv):
        return False
    if binary is None:
        return True
    want = os.path.realpath(binary)
    return any(os.path.realpath(a) == want for a in argv[:2])


def running_pid(pid_file, key, binary=None):
    """The pid of the live process recorded in ``pid_file`` whose argv names ``key``, or None
    (dead, zombie, or PID reused)."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    if cmdline_matches(proc_cmdline(pid), key, binary):
        return pid
    return None


def log_tail(path, offset=0, lines=LOG_TAIL):
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset)
            data = handle.read()
    except (IOError, OSError):
        return ''
    return '\n'.join(data.decode('utf-8', 'replace').splitlines()[-lines:])


def open_log(path):
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def log_launch(argv, log_fd):
    """Mark a launch in the log; return the offset the process's own output starts at."""
    os.lseek(log_fd, 0, os.SEEK_END)
    os.write(log_fd, ('--- cloudhv.ch: launching %s at %s ---\n'
                      % (' '.join(argv), time.strftime('%Y-%m-%dT%H:%M:%S'))).encode())
    return os.lseek(log_fd, 0, os.SEEK_END)


def spawn_detached(argv, log_file, umask, env=None):
    """Start ``argv`` detached (new session, stdin /dev/null, stdout and stderr appended to
    ``log_file``, no inherited fds, cwd /) under ``umask``. Returns (Popen, log offset).
    The child is in the network namespace of the calling thread. Raises OSError."""
    log_fd = open_log(log_file)
    try:
        offset = log_launch(argv, log_fd)
        kwargs = dict(stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, close_fds=True,
                      start_new_session=True, cwd='/', env=env)
        # The umask is set in the child only. os.umask() is process-wide: set around Popen in the
        # parent, it would also apply to what other threads create meanwhile (ch_vms runs several
        # VMs in threads: a directory made then would be 0600), and another thread's restore could
        # give this child the wrong umask. (Popen's umask= needs Python 3.9: tests/config.yml.)
        proc = subprocess.Popen(argv, umask=umask, **kwargs)  # pylint: disable=unexpected-keyword-arg
    finally:
        os.close(log_fd)
    return proc, offset


def exited(pid, proc=None):
    """True once ``pid`` is gone or a zombie (reaped here when it is our child)."""
    if proc is not None and proc.pid == pid:
        return proc.poll() is not None
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    return process_gone(pid)


def wait_exit(pid, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        if exited(pid, proc):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def send_signal(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def terminate(pid, term_timeout=5.0, kill_timeout=5.0):
    """SIGTERM, and SIGKILL when it is still there after ``term_timeout``. Returns the steps
    taken; raises OSError(ETIMEDOUT) when even SIGKILL did not end it."""
    steps = ['sigterm']
    send_signal(pid, signal.SIGTERM)
    if not wait_exit(pid, term_timeout):
        steps.append('sigkill')
        send_signal(pid, signal.SIGKILL)
        if not wait_exit(pid, kill_timeout):
            raise OSError(errno.ETIMEDOUT, "pid %d did not exit even after SIGKILL" % pid)
    return steps
