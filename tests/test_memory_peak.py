"""scripts/memory_peak.py's trace replay: the allocations alive at the highest total, grouped by their site."""
from scripts.memory_peak import REPO, by_site, live_at_peak


def alloc(addr, size, filename, line=1, name="f"):
    return {"action": "alloc", "addr": addr, "size": size, "frames": [{"filename": filename, "line": line,
                                                                       "name": name}]}


def free(addr, size):
    return {"action": "free_completed", "addr": addr, "size": size}


def test_the_peak_is_the_highest_total_and_its_live_blocks_are_grouped_by_our_innermost_frame():
    ours = f"{REPO}/attention/bands.py"
    events = [alloc(1, 100, ours, 10, "tiles"), alloc(2, 300, "/usr/lib/torch/x.py"), free(2, 300),
              alloc(3, 250, ours, 20, "share"), alloc(4, 60, ours, 10, "tiles"),  # peak here: 100 + 250 + 60
              free(3, 250), alloc(5, 120, ours, 30, "late")]
    events[1]["frames"].append({"filename": ours, "line": 5, "name": "caller"})
    peak, live = live_at_peak(events)
    assert peak == 410 and sorted(live) == [1, 3, 4]
    assert by_site(live) == [("bands.py:20 share", 250, 1), ("bands.py:10 tiles", 160, 2)]
    peak, live = live_at_peak(events[:2])
    assert peak == 400 and by_site(live) == [("bands.py:5 caller", 300, 1), ("bands.py:10 tiles", 100, 1)]
