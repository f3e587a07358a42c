"""What the benchmarks read of their own process: a field of ``/proc/self/status``."""


def status_kib(field: str) -> int:
    """``VmRSS``, ``VmHWM`` (peak resident) and the like, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")
