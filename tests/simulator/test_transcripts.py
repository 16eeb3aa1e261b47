"""Replay the conformance transcripts recorded from a real Cloud Hypervisor (transcripts/*.json,
written by record_transcripts.py) against chsim, and fail on any difference in status code,
reason phrase, recorded headers, response body (normalized by the same rules) or process exit,
unless README.md's table "Intended differences from the transcripts" lists it."""

import glob
import json
import os
import shutil

import pytest

from . import transcripts as T
from .conftest import base_env, install_launcher

HERE = os.path.dirname(os.path.abspath(__file__))
TRANSCRIPTS = sorted(glob.glob(os.path.join(T.TRANSCRIPT_DIR, "*.json")))
README = os.path.join(HERE, "README.md")
TABLE_TITLE = "## Intended differences from the transcripts"


def intended_differences(path=README):
    """[(transcript, step or None for '*', field, why)] from the README table."""
    with open(path) as f:
        text = f.read()
    if TABLE_TITLE not in text:
        return []
    section = text.split(TABLE_TITLE, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 4 or cells[0] in ("transcript", "") \
                or set(cells[0]) <= set("-: "):
            continue
        name, step, field, why = cells
        field = field.strip("`")
        rows.append((name, None if step == "*" else int(step), field, why))
    return rows


def diff(expected, actual, path):
    """Paths (``body.config.cpus.profile``, ``status``) where two JSON values differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in list(expected) + [k for k in actual if k not in expected]:
            sub = "%s.%s" % (path, key)
            if key not in actual:
                out.append((sub, expected[key], "<absent>"))
            elif key not in expected:
                out.append((sub, "<absent>", actual[key]))
            else:
                out.extend(diff(expected[key], actual[key], sub))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out.extend(diff(e, a, "%s[%d]" % (path, i)))
        return out
    if expected != actual or type(expected) is not type(actual):
        return [(path, expected, actual)]
    return []


def compare_steps(recorded, replayed):
    """[(step index, field path, recorded value, chsim's value)] over a whole transcript."""
    out = []
    for i, (rec, rep) in enumerate(zip(recorded, replayed)):
        for key in ("response", "result"):
            if key in rec:
                for path, e, a in diff(rec[key], rep.get(key), key == "result" and "exit" or ""):
                    out.append((i, path.lstrip("."), e, a))
    return out


def is_intended(name, step, field, table):
    for t_name, t_step, t_field, _why in table:
        if t_name == name and (t_step is None or t_step == step) and (
                field == t_field or field.startswith(t_field + ".")
                or field.startswith(t_field + "[")):
            return True
    return False


def replay(doc):
    """Run the transcript's own steps against chsim; returns the replayed steps."""
    root = T.make_root()
    netns = None
    conv = None
    try:
        if doc.get("taps"):
            if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/dev/net/tun"):
                pytest.skip("transcript %s needs root, ip(8) and /dev/net/tun for its taps"
                            % doc["scenario"])
            netns = T.Netns(doc["taps"], prefix="chtr")
        launcher = install_launcher(os.path.join(root, "cloud-hypervisor"))
        T.prepare_root(root, {"files": doc.get("files", {})})
        steps = [{k: v for k, v in s.items() if k not in ("response", "result")}
                 for s in doc["steps"]]
        conv = T.Conversation(launcher, root, netns=netns.name if netns else None,
                              env=base_env(doc.get("sim_env")))
        return conv.run(steps)
    finally:
        if conv is not None:
            conv.stop()
        if netns is not None:
            netns.close()
        shutil.rmtree(root, ignore_errors=True)


def name_of(path):
    return os.path.basename(path)[:-len(".json")]


def test_transcripts_exist_for_every_scenario():
    assert sorted(name_of(p) for p in TRANSCRIPTS) == sorted(T.SCENARIOS)


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=name_of)
def test_transcript_steps_match_the_scenario(path):
    """A transcript is the recording of the scenario as transcripts.py defines it today."""
    doc = T.load_transcript(name_of(path))
    recorded = [{k: v for k, v in s.items() if k not in ("response", "result")}
                for s in doc["steps"]]
    assert recorded == T.SCENARIOS[doc["scenario"]]["steps"]
    assert doc["recorded_with"].startswith("cloud-hypervisor v53.0")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=name_of)
def test_chsim_replays_transcript(path):
    doc = T.load_transcript(name_of(path))
    table = intended_differences()
    replayed = replay(doc)
    problems = []
    for step, field, rec, sim in compare_steps(doc["steps"], replayed):
        if is_intended(doc["scenario"], step, field, table):
            continue
        s = doc["steps"][step]
        what = "%s %s" % (s.get("method"), s.get("path")) if s["op"] == "request" else s["op"]
        problems.append("step %d (%s%s) %s: CH %s, chsim %s" % (
            step, what, (", %s" % s["note"]) if s.get("note") else "", field or "response",
            json.dumps(rec)[:300], json.dumps(sim)[:300]))
    assert not problems, "%d difference(s) from real CH in %s:\n%s" % (
        len(problems), os.path.basename(path), "\n".join(problems))


def test_every_intended_difference_still_occurs():
    """An entry of the README table that no longer matches a difference must go."""
    table = intended_differences()
    names = set(T.SCENARIOS)
    for row in table:
        assert row[0] in names, "README names an unknown transcript: %r" % (row,)
        assert row[3], "README row without a reason: %r" % (row,)
    # Checked against the replays by test_chsim_replays_transcript's run in the same session is
    # not possible across parametrized tests; replay the transcripts named in the table here.
    unused = []
    for name in sorted({r[0] for r in table}):
        doc = T.load_transcript(name)
        diffs = compare_steps(doc["steps"], replay(doc))
        for row in [r for r in table if r[0] == name]:
            if not any(is_intended(name, step, field, [row]) for step, field, _e, _a in diffs):
                unused.append(row)
    assert not unused, "intended differences that no longer occur: %r" % unused


def test_the_comparison_catches_a_changed_response():
    """The replay can fail: a transcript with one status, one header and one body field changed
    is reported in exactly those places."""
    doc = T.load_transcript("lifecycle")
    changed = json.loads(json.dumps(doc["steps"]))
    changed[1]["response"]["status"] = 500
    changed[0]["response"]["headers"]["Content-Type"] = "text/plain"
    changed[0]["response"]["body"]["version"] = "0.0.0"
    found = sorted((s, f) for s, f, _e, _a in compare_steps(changed, doc["steps"]))
    assert found == [(0, "body.version"), (0, "headers.Content-Type"), (1, "status")]
    table = [("lifecycle", None, "body.config", "x")]
    assert is_intended("lifecycle", 0, "body.config.cpus", table)
    assert not is_intended("lifecycle", 0, "body.configs", table)
    assert not is_intended("errors", 0, "body.config.cpus", table)


def test_intended_differences_table_is_parsed(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n%s\n\n| transcript | step | field | why |\n|---|---|---|---|\n"
                      "| lifecycle | 3 | `body` | wording |\n| errors | * | status | because |\n\n"
                      "## next\n| a | b | c | d |\n" % TABLE_TITLE)
    assert intended_differences(str(readme)) == [("lifecycle", 3, "body", "wording"),
                                                 ("errors", None, "status", "because")]
