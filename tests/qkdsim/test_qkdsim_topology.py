"""Topology loading and validation."""

from __future__ import annotations

import pytest

from qkdsim_support import LAB_TOPOLOGY

from qkdsim.topology import TopologyError, load_topology, parse_topology

TWO_SITES = """
sites:
  - id: A
  - id: B
"""
LINK = """
  - sites: [A, B]
    technology: DV
    key_rate_bps: 1000
    pool_capacity_bits: 4096
    initial_fill: 1.0
    qber: 0.02
"""


def test_default_topology_is_the_five_site_bank_network():
    topology = load_topology()
    assert [site.id for site in topology.sites] == ["MAD-1", "MAD-2", "MAD-3", "NSP-1", "MEX-1"]
    assert {site.kme_id for site in topology.sites} == {f"KME-{site.id}" for site in topology.sites}
    assert all(site.saes == (f"SAE-{site.id}",) for site in topology.sites)
    links = {frozenset(link.sites): link for link in topology.links}
    assert set(links) == {frozenset(pair) for pair in
                          [("MAD-1", "MAD-2"), ("MAD-2", "MAD-3"), ("MAD-1", "MAD-3"), ("MAD-1", "NSP-1")]}
    assert not any("MEX-1" in link.sites for link in topology.links)
    assert links[frozenset(("MAD-2", "MAD-3"))].technology == "CV"
    long_haul = links[frozenset(("MAD-1", "NSP-1"))]
    metro_rates = [link.key_rate_bps for link in topology.links if link is not long_haul]
    assert long_haul.key_rate_bps < min(metro_rates)
    assert max(link.qber for link in topology.links) == long_haul.qber < long_haul.policy.qber_threshold
    for link in topology.links:
        keys_per_second = link.key_rate_bps / link.policy.key_size
        assert 1 <= keys_per_second <= 500 and link.initial_fill == 1.0
        assert link.pool_capacity_bits // link.policy.key_size == 4096


def test_defaults_and_per_link_overrides():
    topology = load_topology(LAB_TOPOLOGY)
    site_b = topology.site("B")
    assert (site_b.kme_id, site_b.saes, site_b.location) == ("KME-B", ("SAE-B1", "SAE-B2"), "Bench 2")
    assert topology.site("C").location == ""
    by_id = {link.link_id: link for link in topology.links}
    assert by_id["A--B"].policy.key_size == 256 and by_id["A--B"].policy.max_key_per_request == 64
    assert by_id["A--D"].policy.key_size == 128
    assert by_id["A--E"].alarmed and not by_id["A--B"].alarmed
    assert by_id["A--E"].distance_km == 120 and by_id["A--B"].distance_km is None


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "top level: must be a mapping, got list"),
    ("links: []", "top level: field 'sites': is required"),
    ("sites: []", "top level: field 'sites': must list at least one site"),
    (TWO_SITES + "colour: blue", "top level: field 'colour': unknown field"),
    (TWO_SITES + "defaults: {key_size: 100}", "defaults: field 'key_size': must be a multiple of 8, got 100"),
    (TWO_SITES + "defaults: {key_size: 8192}", "defaults: field 'key_size': must lie within min_key_size..max_key"),
    (TWO_SITES + "defaults: {qber_threshold: 2}", "defaults: field 'qber_threshold': must be >= 0 and <= 1, got 2"),
    (TWO_SITES + "defaults: {max_key_per_request: yes}",
     "defaults: field 'max_key_per_request': must be an integer, got bool"),
    ("sites:\n  - id: A B", "sites[0]: field 'id': 'A B' must match [A-Za-z0-9_-]+"),
    ("sites:\n  - name: nameless", "sites[0]: field 'id': is required"),
    ("sites:\n  - id: A\n  - id: A", "sites[1] (A): field 'id': 'A' is already used by sites[0] (A)"),
    ("sites:\n  - id: A\n    saes: []", "sites[0] (A): field 'saes': must list at least one SAE"),
    ("sites:\n  - id: A\n    saes: [X]\n  - id: B\n    saes: [X]",
     "sites[1] (B): field 'saes': 'X' is already used by sites[0] (A)"),
    ("sites:\n  - id: A\n    kme_id: K/1", "sites[0] (A): field 'kme_id': 'K/1' must be a string matching"),
    ("sites:\n  - id: A\n    colour: red", "sites[0]: field 'colour': unknown field"),
    (TWO_SITES + "links:" + LINK.replace("[A, B]", "[A, Z]"), "links[0] (A--Z): field 'sites': unknown site 'Z'"),
    (TWO_SITES + "links:" + LINK.replace("[A, B]",
     "[A, A]"), "links[0] (A--A): field 'sites': must name two distinct sites"),
    (TWO_SITES + "links:" + LINK.replace("[A, B]", "[A]"), "links[0]: field 'sites': must list exactly two site IDs"),
    (TWO_SITES + "links:" + LINK + LINK.replace("[A, B]", "[B, A]"),
     "links[1] (B--A): field 'sites': duplicate link: these sites are already linked by links[0] (A--B)"),
    (TWO_SITES + "links:" + LINK.replace("DV",
     "QV"), "links[0] (A--B): field 'technology': must be one of DV, CV, got 'QV'"),
    (TWO_SITES + "links:" + LINK.replace("1000", "0"), "links[0] (A--B): field 'key_rate_bps': must be > 0, got 0"),
    (TWO_SITES + "links:" + LINK.replace("4096",
     "'big'"), "links[0] (A--B): field 'pool_capacity_bits': must be an integer, got str"),
    (TWO_SITES + "links:" + LINK.replace("initial_fill: 1.0",
     "initial_fill: 1.5"), "field 'initial_fill': must be >= 0 and <= 1, got 1.5"),
    (TWO_SITES + "links:" + LINK.replace("    qber: 0.02\n", ""), "links[0] (A--B): field 'qber': is required"),
    (TWO_SITES + "links:" + LINK + "    speed: 3\n", "links[0]: field 'speed': unknown field"),
    ("sites: [\n", "invalid YAML: line 2, column 1"),
])
def test_validation_errors_name_file_item_and_field(text, message):
    with pytest.raises(TopologyError) as raised:
        parse_topology(text, "net.yml")
    assert str(raised.value).startswith("net.yml: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(TopologyError, match=r"missing\.yml: cannot read topology file: No such file or directory"):
        load_topology(tmp_path / "missing.yml")
