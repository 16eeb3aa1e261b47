"""Record the conformance transcripts from a real Cloud Hypervisor (run by hand, as root, on a
host with a usable /dev/kvm):

    CH_BINARY=/opt/ch53/bin/cloud-hypervisor python tests/simulator/record_transcripts.py [scenario...]

The "snapshot" scenario takes CH_BINARY_SNAPSHOT instead (a build that can snapshot on this host,
see transcripts.py); without it that scenario is left as it is.

For each scenario of transcripts.py (all by default) it makes a temporary directory, writes the
test guest (tests/support/testguest.py) and the scenario's files into it, starts the binary there
(inside a throwaway network namespace holding the scenario's taps, if it has any), runs the steps
and writes tests/simulator/transcripts/<scenario>.json. Everything it created is removed
afterwards. The transcripts are CH's answers, normalized by the rules in transcripts.py.
"""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import transcripts as T  # noqa: E402


def version_of(binary):
    return subprocess.run([binary, "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0].strip()


def record(binary, name, version):
    scenario = T.SCENARIOS[name]
    root = T.make_root()
    netns = T.Netns(scenario["taps"]) if scenario.get("taps") else None
    conv = T.Conversation(binary, root, netns=netns.name if netns else None)
    try:
        T.prepare_root(root, scenario)
        steps = conv.run(scenario["steps"])
    finally:
        conv.stop()
        if netns:
            netns.close()
        shutil.rmtree(root, ignore_errors=True)
    doc = {
        "scenario": name,
        "recorded_with": version,
        "binary_note": scenario.get("binary_note", "stock build of the release tag"),
        "command_line": ["cloud-hypervisor"] + T.command_line("{root}"),
        "files": scenario.get("files", {}),
        "taps": scenario.get("taps", []),
        "sim_env": scenario.get("sim_env", {}),
        "steps": steps,
    }
    os.makedirs(T.TRANSCRIPT_DIR, exist_ok=True)
    with open(T.transcript_path(name), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    return doc


def main(argv):
    if not os.environ.get("CH_BINARY"):
        sys.exit("set CH_BINARY to the real cloud-hypervisor")
    names = argv or sorted(T.SCENARIOS)
    for name in names:
        # a scenario may need another build (binary_env, e.g. CH_BINARY_SNAPSHOT): skipped
        # without it rather than recorded from a binary that cannot run it
        env = T.SCENARIOS[name].get("binary_env", "CH_BINARY")
        binary = os.environ.get(env)
        if not binary:
            print("%s: not recorded, set %s (%s)" % (name, env, T.SCENARIOS[name].get("binary_note")))
            continue
        doc = record(binary, name, version_of(binary))
        codes = [s["response"].get("status") for s in doc["steps"] if "response" in s]
        print("%s: %d steps, statuses %s" % (name, len(doc["steps"]), codes))


if __name__ == "__main__":
    main(sys.argv[1:])
