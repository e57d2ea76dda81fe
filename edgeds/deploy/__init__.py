"""Deploy over SSH or to this machine: verified atomic releases on devices, rollback, fleet rollouts.

- :mod:`.transport` the small interface through which a host is reached (SSH or local)
- :mod:`.ssh`      the SSH transport, the only module importing paramiko (pinned host keys, key auth, timeouts)
- :mod:`.local`    the local transport: this machine through child processes and copies (the ``local`` target)
- :mod:`.local_agent` the local target's install, its agent a background process of this user
- :mod:`.logs`     the agent's log from a host: the last lines, or followed
- :mod:`.device`   what runs on the device (release store, admission, steps, health, step server)
- :mod:`.host`     one host, seen from here: plan -> upload missing objects -> apply
- :mod:`.rollout`  many hosts: canary, batches, per-host timeouts, abort threshold
- :mod:`.setup`    device probe, agent install, service
- :mod:`.fleet`    one operation on every host of a target: device commands, probe, setup
- :mod:`.enroll`   pin each host's SSH key in the target's known_hosts (trust on first use)
- :mod:`.targets`  target YAML -> endpoints (paths resolved beside the target file)
"""
