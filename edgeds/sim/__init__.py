"""Simulated rig for tests, ``make demo`` and the HIL sim rig: devices (sshd) and a broker.

Nothing here is imported by the rest of the package at run time; it exists so that tests and
demos share one way of starting and stopping simulated hardware on loopback.
"""
