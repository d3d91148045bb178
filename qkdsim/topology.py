"""Load and validate the YAML topology of a simulated QKD network.

A topology lists sites (one KME each, with the SAEs attached to it) and the QKD links between
sites. Every validation error names the file, the site or link and the field, in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TOPOLOGY_RESOURCE = "default_topology.yml"
TECHNOLOGIES = ("DV", "CV")
INTERFACES = ("etsi014", "etsi004", "skip")
"""Key-delivery interfaces a KME can serve (a site's ``interfaces``; default: etsi014 only)."""

_SITE_ID = re.compile(r"[A-Za-z0-9_-]+")
_ENTITY_ID = re.compile(r"[A-Za-z0-9_.-]+")


class TopologyError(ValueError):
    """The topology file cannot be read or is invalid; the message is one line."""


@dataclass(frozen=True)
class KeyPolicy:
    """Key delivery limits of a link (``defaults`` in the file, overridable per link)."""

    key_size: int = 256
    min_key_size: int = 64
    max_key_size: int = 4096
    max_key_per_request: int = 1024
    qber_threshold: float = 0.11


@dataclass(frozen=True)
class Site:
    """A site: one KME and the SAEs attached to it."""

    id: str
    name: str
    location: str
    kme_id: str
    saes: tuple[str, ...]
    interfaces: tuple[str, ...] = ("etsi014",)


@dataclass(frozen=True)
class Link:
    """A QKD link between two sites; its two KMEs share one key stream."""

    sites: tuple[str, str]
    technology: str
    key_rate_bps: float
    pool_capacity_bits: int
    initial_fill: float
    qber: float
    distance_km: float | None
    policy: KeyPolicy

    @property
    def link_id(self) -> str:
        return f"{self.sites[0]}--{self.sites[1]}"

    @property
    def alarmed(self) -> bool:
        """True when the QBER is above the threshold: the link distils no key."""
        return self.qber > self.policy.qber_threshold


@dataclass(frozen=True)
class Topology:
    """A validated topology. ``source`` names the file it came from."""

    source: str
    sites: tuple[Site, ...]
    links: tuple[Link, ...]

    def site(self, site_id: str) -> Site:
        return next(site for site in self.sites if site.id == site_id)

    def link_kmes(self, link: Link) -> tuple[str, str]:
        return self.site(link.sites[0]).kme_id, self.site(link.sites[1]).kme_id


def load_topology(path: str | Path | None = None) -> Topology:
    """Load and validate a topology file; None loads the built-in default network."""
    if path is None:
        resource = resources.files(__package__).joinpath(DEFAULT_TOPOLOGY_RESOURCE)
        return parse_topology(resource.read_text(encoding="utf-8"), str(resource))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TopologyError(f"{path}: cannot read topology file: {reason}") from None
    return parse_topology(text, str(path))


def parse_topology(text: str, source: str) -> Topology:
    """Parse and validate topology YAML; ``source`` names the file in error messages."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(f"{source}: invalid YAML: {where}{problem}") from None
    top = _Fields(document, source, "top level")
    top.only({"defaults", "sites", "links"})
    defaults_entry = _Fields(top.get("defaults", dict, {}), source, "defaults")
    defaults_entry.only(_POLICY_FIELDS)
    defaults = _policy(defaults_entry, KeyPolicy())
    sites = _sites(top.get("sites", list), source)
    links = _links(top.get("links", list, []), source, sites, defaults)
    return Topology(source=source, sites=sites, links=links)


class _Fields:
    """Typed access to one YAML mapping; errors name file, item and field."""

    def __init__(self, mapping: Any, source: str, where: str):
        self.source, self.where = source, where
        if not isinstance(mapping, dict):
            raise self.error(None, f"must be a mapping, got {_kind(mapping)}")
        self.mapping = mapping

    def error(self, field: str | None, problem: str) -> TopologyError:
        subject = f"{self.where}: field '{field}'" if field else self.where
        return TopologyError(f"{self.source}: {subject}: {problem}")

    def only(self, allowed: set[str]) -> None:
        for name in self.mapping:
            if name not in allowed:
                raise self.error(str(name), f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """The value of field ``name``, checked against ``kind``; required unless a default is given."""
        if self.mapping.get(name) is None:
            if default is ...:
                raise self.error(name, "is required")
            return default
        value = self.mapping[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(name, f"must be {_TYPE_NAMES[kind]}, got {_kind(value)}")
        return value

    def number(self, name: str, low: float, high: float | None = None, default: Any = ...,
               low_inclusive: bool = True) -> float:
        value = self.get(name, _NUMBER, default)
        if value is None:
            return value
        too_low = value < low if low_inclusive else value <= low
        if too_low or high is not None and value > high:
            bounds = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
            raise self.error(name, f"must be {bounds}, got {value}")
        return value

    def integer(self, name: str, low: int, default: Any = ..., multiple_of: int = 1) -> int:
        value = self.get(name, int, default)
        if value < low:
            raise self.error(name, f"must be >= {low}, got {value}")
        if value % multiple_of:
            raise self.error(name, f"must be a multiple of {multiple_of}, got {value}")
        return value

    def identifier(self, name: str, pattern: re.Pattern, default: Any = ...) -> str:
        value = self.get(name, str, default)
        if not pattern.fullmatch(value):
            raise self.error(name, f"{value!r} must match {pattern.pattern}")
        return value


_POLICY_FIELDS = {f.name for f in fields(KeyPolicy)}
_NUMBER = (int, float)
_TYPE_NAMES = {int: "an integer", _NUMBER: "a number", str: "a string", list: "a list", dict: "a mapping"}


def _policy(entry: _Fields, base: KeyPolicy) -> KeyPolicy:
    """The key policy of ``entry``: ``base`` with the policy fields ``entry`` sets."""
    policy = replace(
        base,
        key_size=entry.integer("key_size", 8, base.key_size, multiple_of=8),
        min_key_size=entry.integer("min_key_size", 8, base.min_key_size, multiple_of=8),
        max_key_size=entry.integer("max_key_size", 8, base.max_key_size, multiple_of=8),
        max_key_per_request=entry.integer("max_key_per_request", 1, base.max_key_per_request),
        qber_threshold=entry.number("qber_threshold", 0, 1, base.qber_threshold),
    )
    if not policy.min_key_size <= policy.key_size <= policy.max_key_size:
        raise entry.error("key_size", f"must lie within min_key_size..max_key_size "
                                      f"({policy.min_key_size}..{policy.max_key_size}), got {policy.key_size}")
    return policy


def _sites(entries: list, source: str) -> tuple[Site, ...]:
    if not entries:
        raise TopologyError(f"{source}: top level: field 'sites': must list at least one site")
    sites: list[Site] = []
    site_owners: dict[str, str] = {}
    entity_owners: dict[str, str] = {}  # KME and SAE IDs share one namespace (certificate CNs)
    for index, raw in enumerate(entries):
        entry = _Fields(raw, source, f"sites[{index}]")
        entry.only({"id", "name", "location", "kme_id", "saes", "interfaces"})
        site_id = entry.identifier("id", _SITE_ID)
        entry.where = f"sites[{index}] ({site_id})"
        if site_id in site_owners:
            raise entry.error("id", f"{site_id!r} is already used by {site_owners[site_id]}")
        site_owners[site_id] = entry.where
        kme_id = entry.get("kme_id", str, f"KME-{site_id}")
        saes = entry.get("saes", list, [f"SAE-{site_id}"])
        if not saes:
            raise entry.error("saes", "must list at least one SAE")
        for field, entity in [("kme_id", kme_id)] + [("saes", sae) for sae in saes]:
            if not (isinstance(entity, str) and _ENTITY_ID.fullmatch(entity)):
                raise entry.error(field, f"{entity!r} must be a string matching {_ENTITY_ID.pattern}")
            if entity in entity_owners:
                raise entry.error(field, f"{entity!r} is already used by {entity_owners[entity]}")
            entity_owners[entity] = entry.where
        sites.append(Site(id=site_id, name=entry.get("name", str, site_id), location=entry.get("location", str, ""),
                          kme_id=kme_id, saes=tuple(saes), interfaces=_interfaces(entry)))
    return tuple(sites)


def _interfaces(entry: _Fields) -> tuple[str, ...]:
    """The key-delivery interfaces a site's KME serves: a non-empty list of INTERFACES, no repeats."""
    interfaces = entry.get("interfaces", list, ["etsi014"])
    if not interfaces:
        raise entry.error("interfaces", f"must list at least one of {', '.join(INTERFACES)}")
    for interface in interfaces:
        if interface not in INTERFACES:
            raise entry.error("interfaces", f"unknown interface {interface!r} (known: {', '.join(INTERFACES)})")
    if len(set(interfaces)) != len(interfaces):
        raise entry.error("interfaces", f"lists an interface more than once: {interfaces!r}")
    return tuple(interfaces)


def _links(entries: list, source: str, sites: tuple[Site, ...], defaults: KeyPolicy) -> tuple[Link, ...]:
    known = {site.id for site in sites}
    links: list[Link] = []
    seen: dict[frozenset, str] = {}
    for index, raw in enumerate(entries):
        entry = _Fields(raw, source, f"links[{index}]")
        entry.only({"sites", "technology", "key_rate_bps", "pool_capacity_bits", "initial_fill", "qber",
                    "distance_km"} | _POLICY_FIELDS)
        pair = entry.get("sites", list)
        if len(pair) != 2 or not all(isinstance(site, str) for site in pair):
            raise entry.error("sites", f"must list exactly two site IDs, got {pair!r}")
        entry.where = f"links[{index}] ({pair[0]}--{pair[1]})"
        for site in pair:
            if site not in known:
                raise entry.error("sites", f"unknown site {site!r} (known: {', '.join(sorted(known))})")
        if pair[0] == pair[1]:
            raise entry.error("sites", "must name two distinct sites")
        if frozenset(pair) in seen:
            raise entry.error("sites", f"duplicate link: these sites are already linked by {seen[frozenset(pair)]}")
        seen[frozenset(pair)] = entry.where
        technology = entry.get("technology", str)
        if technology not in TECHNOLOGIES:
            raise entry.error("technology", f"must be one of {', '.join(TECHNOLOGIES)}, got {technology!r}")
        links.append(Link(
            sites=(pair[0], pair[1]),
            technology=technology,
            key_rate_bps=entry.number("key_rate_bps", 0, low_inclusive=False),
            pool_capacity_bits=entry.integer("pool_capacity_bits", 1),
            initial_fill=entry.number("initial_fill", 0, 1),
            qber=entry.number("qber", 0, 1),
            distance_km=entry.number("distance_km", 0, default=None),
            policy=_policy(entry, defaults),
        ))
    return tuple(links)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
