"""qkdsim: a simulated QKD network for developing and testing qsafe.keyfabric.

Every site runs a KME serving ETSI GS QKD 014 v1.1.1 over mutual TLS on its own loopback port;
the two KMEs of a QKD link share one key stream that refills at the link's key rate. Run it with
``python -m qkdsim --state-dir DIR`` or in-process with ``qkdsim.server.Simulator``.
"""
