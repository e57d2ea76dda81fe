"""Hardware-in-the-loop rigs: a rig YAML (devices + expectations), leases, the suite runner, the report."""
