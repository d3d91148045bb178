"""One log line per request, with no key material."""

from __future__ import annotations

import re
import time

from qkdsim_support import key_ids, key_in_text

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO (?P<kme>\S+) (?P<caller>\S+) (?P<method>[A-Z]+) "
                  r"(?P<path>\S+) (?P<status>\d{3}) keys=(?P<keys>\d+) (?P<ms>\d+\.\d\d)ms$")


def test_request_lines_and_no_key_material(lab_sim, sae, seen_keys):
    master, slave = sae(lab_sim, "SAE-A"), sae(lab_sim, "SAE-B1")
    ids = key_ids(master.enc_keys("SAE-B1", number=7, size=512))
    [single] = key_ids(master.enc_keys("SAE-B1", method="POST"))
    key_ids(slave.dec_keys("SAE-A", [single], method="GET"))
    key_ids(slave.dec_keys("SAE-A", ids))
    assert master.enc_keys("SAE-B1", number=999).status_code == 400

    expected = [
        ("KME-A", "SAE-A", "GET", "/api/v1/keys/SAE-B1/enc_keys?number=&size=", "200", "7"),
        ("KME-A", "SAE-A", "POST", "/api/v1/keys/SAE-B1/enc_keys", "200", "1"),
        ("KME-B", "SAE-B1", "GET", "/api/v1/keys/SAE-A/dec_keys?key_ID=", "200", "1"),
        ("KME-B", "SAE-B1", "POST", "/api/v1/keys/SAE-A/dec_keys", "200", "7"),
        ("KME-A", "SAE-A", "GET", "/api/v1/keys/SAE-B1/enc_keys?number=", "400", "0"),
    ]
    # The server writes a request's line after sending its answer: give the last one a moment.
    deadline = time.monotonic() + 5
    while True:
        lines = [LINE.match(line) for line in lab_sim.log_file.read_text().splitlines()]
        requests_logged = [match.groupdict() for match in lines if match]
        tail = [(r["kme"], r["caller"], r["method"], r["path"], r["status"], r["keys"]) for r in requests_logged[-5:]]
        if tail == expected or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert tail == expected
    log = lab_sim.log_file.read_text()
    assert seen_keys and not [key for key in seen_keys if key_in_text(key, log)]
    assert single not in log  # query values stay out of the log too
