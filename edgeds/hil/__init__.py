"""Hardware-in-the-loop rigs: a rig YAML (devices + expectations), leases, the suite runner, the report,
and :mod:`.gate` (one run of a rig followed by its report)."""
