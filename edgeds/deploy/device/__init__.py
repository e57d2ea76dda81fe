"""What runs on the device: the release store and the deploy steps the host invokes over SSH.

- :mod:`.probe`      fingerprint of a bare device (stdlib only: its source alone is piped to ``python3``)
- :mod:`.protocol`   final statuses and progress events: what a step answers the host
- :mod:`.store`      the install dir: objects, releases, ``current``, ``state.json``, lock, trust, recover
- :mod:`.admission`  whether a bundle may be installed here and what to upload (the ``plan`` step)
- :mod:`.steps`      ingest, stage, apply (commit or roll back), rollback, prune, status, trust
- :mod:`.health`     make the agent load a release, then check what it serves
- :mod:`.build`      the TensorRT engine build, before the flip
- :mod:`.server`     the relay the host runs and the step server the agent starts (fork per step)
- :mod:`.cli`        ``python -m edgeds.deploy.device COMMAND --root DIR``: request in, result out
"""
