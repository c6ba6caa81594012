#!/usr/bin/env python3
"""Turn the raw data of scripts/bench.d/measure into a table and a JSON results file.

usage: report.py WORKDIR OUT.json [--wrap W] [--wrap-note N] [--load-before L] [--load-after L]
                 [--elapsed S] [--lrun-version V]
"""

import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import time

RUNTIMES = ["lrun", "crun", "runc"]
# crun with --cgroup-manager=disabled: like for like while lrun creates no cgroups.
PEERS = ["crun", "runc", "crun-nocg"]


def stats(xs):
    """Summary in milliseconds of samples given in seconds."""
    ms = [x * 1000.0 for x in xs]
    return {
        "n": len(ms),
        "mean_ms": statistics.fmean(ms),
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "stddev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
    }


def ratios(by_rt, key):
    out = {}
    lrun = by_rt.get("lrun")
    for other in PEERS:
        o = by_rt.get(other)
        if lrun and o and o[key] > 0:
            out[f"lrun/{other}"] = lrun[key] / o[key]
    return out


def read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def item_run(work):
    times = {}
    for path in sorted(glob.glob(os.path.join(work, "run-*.json"))):
        with open(path) as f:
            for r in json.load(f)["results"]:
                times.setdefault(r["command"], []).extend(r["times"])
    by = {name: stats(t) for name, t in times.items()}
    return {
        "what": "hyperfine -N: `RUNTIME --root DIR run --bundle B ID` of /bin/true",
        "results": by,
        "ratio_mean": ratios(by, "mean_ms"),
        "ratio_median": ratios(by, "median_ms"),
        "ratio_min": ratios(by, "min_ms"),
    }


def item_lifecycle(work):
    rows = read_rows(os.path.join(work, "lifecycle.tsv"))
    us, polls = {}, {}
    for name, _i, t, p in rows:
        us.setdefault(name, []).append(int(t) / 1e6)
        polls.setdefault(name, []).append(int(p))
    by = {name: stats(t) for name, t in us.items()}
    for name in by:
        by[name]["state_polls_mean"] = statistics.fmean(polls[name])
    shell = by.get("shell")
    net = {}
    if shell:
        for name in RUNTIMES + ["crun-nocg"]:
            if name in by:
                net[name] = {
                    "mean_ms": by[name]["mean_ms"] - shell["mean_ms"],
                    "median_ms": by[name]["median_ms"] - shell["median_ms"],
                    "min_ms": by[name]["min_ms"] - shell["min_ms"],
                }
    return {
        "what": "bash loop per cycle: create, start, state until stopped, delete "
        "(separate processes); 'shell' is the same loop around /bin/true and /bin/echo",
        "results": by,
        "net_of_shell": net,
        "ratio_mean": ratios(by, "mean_ms"),
        "ratio_median": ratios(by, "median_ms"),
        "ratio_net_mean": ratios(net, "mean_ms"),
    }


def hyperfine_rounds(work, prefix):
    times = {}
    for path in sorted(glob.glob(os.path.join(work, f"{prefix}-*.json"))):
        with open(path) as f:
            for r in json.load(f)["results"]:
                times.setdefault(r["command"], []).extend(r["times"])
    return {name: stats(t) for name, t in times.items()}


def read_kv(path):
    out = {}
    for row in read_rows(path):
        out[row[0]] = [int(x) for x in row[1:]]
    return out


def item_layers(work, item1):
    by = hyperfine_rounds(work, "layers")
    if not by:
        return None
    base = by.get("lrun")
    item1_lrun = item1["results"].get("lrun")
    layers = {"lrun-l5-warm": 5, "lrun-l5-idle": 5, "lrun-l5-cold": 5, "lrun-l100-cold": 100}
    delta = {}
    for name, n in layers.items():
        s = by.get(name)
        if not (s and base):
            continue
        d = {k: s[k] - base[k] for k in ("mean_ms", "median_ms", "min_ms")}
        d["per_layer_median_ms"] = d["median_ms"] / n
        d["per_layer_mean_ms"] = d["mean_ms"] / n
        if item1_lrun:
            d["median_vs_item1_ms"] = s["median_ms"] - item1_lrun["median_ms"]
        delta[name] = d
    return {
        "what": "hyperfine -N: `lrun run` of /bin/true from a 5-layer package (warm: a created "
        "container holds the layers; idle: the previous run left them mounted idle, "
        "layers.idle_timeout 300; cold: nothing mounted, checked before each run) and a "
        "100-layer package (cold), beside lrun/crun/runc from the plain directory bundle",
        "results": by,
        "delta_vs_lrun_plain": delta,
        "checks": read_kv(os.path.join(work, "layers-check.txt")),
        "targets": {"warm_delta_ms_max": 1.0, "idle_delta_ms_max": 1.0, "cold_per_layer_ms_max": 1.0},
    }


def item_concurrent_layers(work):
    rows = read_rows(os.path.join(work, "concurrent-layers.tsv"))
    if not rows:
        return None
    start, delete, counts, fails = [], [], [], 0
    for _name, _r, t_start, t_delete, f, mounts, dirs, loops, overlays, after in rows:
        start.append(int(t_start) / 1e6)
        delete.append(int(t_delete) / 1e6)
        fails += int(f)
        counts.append(
            {
                "layer_mounts": int(mounts),
                "layer_dirs": int(dirs),
                "loop_devices": int(loops),
                "overlays": int(overlays),
                "layer_mounts_after_delete": int(after),
            }
        )
    return {
        "what": "N `lrun run -d` from the 5-layer package at once; counts taken while all N exist",
        "distinct_layers": 5,
        "start": stats(start),
        "delete": stats(delete),
        "failures": fails,
        "rounds": counts,
    }


def item_big(work):
    rows = read_rows(os.path.join(work, "big.tsv"))
    if not rows:
        return None
    env = {}
    with open(os.path.join(work, "big.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    lrun_cold, lrun_warm, lrun_plain, tar_x, tar_sync, notcold = [], [], [], [], [], 0
    for name, _i, a, b in rows:
        if name == "lrun-cold":
            lrun_cold.append(int(a) / 1e6)
            notcold += int(b)
        elif name == "lrun-warmcache":
            lrun_warm.append(int(a) / 1e6)
        elif name == "lrun-plain-cold":
            lrun_plain.append(int(a) / 1e6)
        elif name == "tar":
            tar_x.append(int(a) / 1e6)
            tar_sync.append(int(b) / 1e6)
    res = {
        "what": "cold page cache: `lrun run` of `cat FILE` from the package (layer not mounted "
        "before) vs `tar --zstd -xf` of the same tree (+ reading FILE), and with sync",
        "tree": {
            "files": int(env.get("BIG_FILES", 0)),
            "bytes": int(env.get("BIG_BYTES", 0)),
            "lrl_bytes": int(env.get("BIG_LRL_BYTES", 0)),
            "tar_zst_bytes": int(env.get("BIG_TAR_BYTES", 0)),
            "key": env.get("BIG_KEY", ""),
        },
        "lrun_cold": stats(lrun_cold) if lrun_cold else None,
        "lrun_warm_cache": stats(lrun_warm) if lrun_warm else None,
        "lrun_plain_dir_cold": stats(lrun_plain) if lrun_plain else None,
        "tar_extract": stats(tar_x) if tar_x else None,
        "tar_extract_sync": stats(tar_sync) if tar_sync else None,
        "runs_not_cold": notcold,
        "target_speedup": 100,
    }
    if lrun_cold and tar_x:
        lc = statistics.median(lrun_cold)
        res["speedup_median"] = statistics.median(tar_x) / lc
        res["speedup_median_with_sync"] = statistics.median(tar_sync) / lc
    return res


def item_concurrent(work):
    rows = read_rows(os.path.join(work, "concurrent.tsv"))
    start, delete, fails = {}, {}, {}
    for name, _r, t_start, t_delete, f in rows:
        start.setdefault(name, []).append(int(t_start) / 1e6)
        delete.setdefault(name, []).append(int(t_delete) / 1e6)
        fails[name] = fails.get(name, 0) + int(f)
    by = {}
    for name in start:
        s, d = stats(start[name]), stats(delete[name])
        by[name] = {"start": s, "delete": d, "failures": fails[name]}
    return {
        "what": "wall time of N `run -d` launched at once (then N `delete --force` at once)",
        "containers": int(os.environ.get("LRUN_BENCH_CONC", "50")),
        "results": by,
        "ratio_start_mean": ratios({k: v["start"] for k, v in by.items()}, "mean_ms"),
        "ratio_delete_mean": ratios({k: v["delete"] for k, v in by.items()}, "mean_ms"),
    }


def item_rss(work):
    rows = read_rows(os.path.join(work, "rss.tsv"))
    kb = {}
    for name, cmd, v in rows:
        kb.setdefault(cmd, {}).setdefault(name, []).append(int(v))
    out = {}
    for cmd, per in kb.items():
        out[cmd] = {
            name: {"max_kib": max(v), "median_kib": statistics.median(v)}
            for name, v in per.items()
        }
        out[cmd]["ratio_median"] = ratios(
            {n: {"m": d["median_kib"]} for n, d in out[cmd].items()}, "m"
        )
    return {
        "what": "/usr/bin/time %M: peak RSS of the runtime process and the children it reaped",
        "results": out,
    }


def cgroups_created(work):
    """Cgroup directories each runtime made for one container (0: none, e.g. a stub)."""
    return {name: int(n) for name, n in read_rows(os.path.join(work, "cgroups.tsv"))}


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except OSError:
        return "unknown"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def fmt_ratio(r, key):
    v = r.get(key)
    return f"{v:5.2f}x" if v is not None else "    - "


HDR = f"{'':44}{'mean':>9}{'median':>9}{'min':>9}{'lrun/crun':>11}{'lrun/runc':>11}"


def print_table(res):
    m = res["machine"]
    print()
    print(f"lrun bench {res['date']}  {m['cpus']} x {m['cpu_model']}, kernel {m['kernel']}")
    print(f"load average before/after: {res['load_before']} / {res['load_after']}")
    print(f"versions: {res['versions']}")
    print(f"wrapper: {res['wrapper'] or 'none'} {res['wrapper_note']}")
    print()
    # Each item on its own: a run of single items (LRUN_BENCH_ITEMS) lacks the others.
    sections = {
        "1_run": print_r1,
        "1b_run_v2": print_r1b,
        "2_lifecycle": print_r2,
        "3_layers": print_r3,
        "4_concurrent": print_r4,
        "4b_concurrent_layers": print_r4b,
        "5_big": print_r5,
        "6_rss": print_r6,
        "7_scale": print_r7,
    }
    for key, section in sections.items():
        item = res["items"].get(key)
        if item and item.get("results", item):
            section(res)
    cg = res["cgroup_dirs_per_container"]
    print("cgroup directories made per container: " + ", ".join(f"{k} {v}" for k, v in cg.items()))
    if cg.get("lrun") == 0 and any(v > 0 for v in cg.values()):
        print("  NOTE: lrun made no cgroup: its times leave out work crun and runc do")
    print(f"leaks: {'none' if not res['leaks'] else 'YES (see messages above)'}")
    print(f"elapsed: {res['elapsed_s']} s")


def print_r1(res):
    r1 = res["items"]["1_run"]
    print("1. run /bin/true (hyperfine -N), ms")
    print(HDR)
    labels = {
        "unshare": "unshare -pfmuni /bin/true",
        "true": "/bin/true",
        "crun-nocg": "crun --cgroup-manager=disabled",
    }
    for name in RUNTIMES + ["crun-nocg", "unshare", "true"]:
        s = r1["results"].get(name)
        if not s:
            continue
        label = labels.get(name, name)
        line = f"  {label:42}{s['mean_ms']:9.2f}{s['median_ms']:9.2f}{s['min_ms']:9.2f}"
        print(line)
    print(
        f"  {'ratio lrun/X (mean, median, min)':42}"
        f"  crun {fmt_ratio(r1['ratio_mean'], 'lrun/crun')} {fmt_ratio(r1['ratio_median'], 'lrun/crun')}"
        f" {fmt_ratio(r1['ratio_min'], 'lrun/crun')}   runc {fmt_ratio(r1['ratio_mean'], 'lrun/runc')}"
        f" {fmt_ratio(r1['ratio_median'], 'lrun/runc')} {fmt_ratio(r1['ratio_min'], 'lrun/runc')}"
    )
    if "lrun/crun-nocg" in r1["ratio_mean"]:
        print(
            f"  {'ratio lrun/crun-without-cgroups':42}  mean {fmt_ratio(r1['ratio_mean'], 'lrun/crun-nocg')}"
            f" median {fmt_ratio(r1['ratio_median'], 'lrun/crun-nocg')}"
            f" min {fmt_ratio(r1['ratio_min'], 'lrun/crun-nocg')}"
        )
    print()


def print_r2(res):
    r2 = res["items"]["2_lifecycle"]
    print("2. create + start + state..stopped + delete (separate commands), ms per cycle")
    print(HDR + f"{'polls':>7}")
    for name in RUNTIMES + ["crun-nocg", "shell"]:
        s = r2["results"].get(name)
        if not s:
            continue
        label = {"shell": "shell loop alone (subtract)", "crun-nocg": "crun --cgroup-manager=disabled"}.get(name, name)
        ratio = ""
        if name == "lrun":
            ratio = f"{fmt_ratio(r2['ratio_mean'], 'lrun/crun'):>11}{fmt_ratio(r2['ratio_mean'], 'lrun/runc'):>11}"
        else:
            ratio = " " * 22
        print(
            f"  {label:42}{s['mean_ms']:9.2f}{s['median_ms']:9.2f}{s['min_ms']:9.2f}"
            f"{ratio}{s['state_polls_mean']:7.2f}"
        )
    if r2["net_of_shell"]:
        n = r2["net_of_shell"]
        print(
            "  net of shell, mean: "
            + ", ".join(f"{k} {v['mean_ms']:.2f}" for k, v in n.items())
            + f"  (lrun/crun {fmt_ratio(r2['ratio_net_mean'], 'lrun/crun').strip()},"
            f" lrun/runc {fmt_ratio(r2['ratio_net_mean'], 'lrun/runc').strip()},"
            f" lrun/crun-nocg {fmt_ratio(r2['ratio_net_mean'], 'lrun/crun-nocg').strip()})"
        )
    print()


def print_r3(res):
    r3 = res["items"].get("3_layers")
    if r3:
        print(f"3. layered packages: run /bin/true (hyperfine -N, {r3['results']['lrun']['n']} runs each), ms")
        print(f"{'':44}{'mean':>9}{'median':>9}{'min':>9}{'d median':>10}{'d/layer':>9}")
        labels3 = {
            "lrun": "lrun, plain directory (as item 1)",
            "lrun-l5-warm": "lrun, 5 layers, warm (held by another)",
            "lrun-l5-idle": "lrun, 5 layers, idle (used recently)",
            "lrun-l5-cold": "lrun, 5 layers, cold (nothing mounted)",
            "lrun-l100-cold": "lrun, 100 layers, cold",
            "crun": "crun, plain directory",
            "runc": "runc, plain directory",
        }
        for name, label in labels3.items():
            s = r3["results"].get(name)
            if not s:
                continue
            d = r3["delta_vs_lrun_plain"].get(name)
            extra = f"{d['median_ms']:+10.2f}{d['per_layer_median_ms']:9.3f}" if d else ""
            print(f"  {label:42}{s['mean_ms']:9.2f}{s['median_ms']:9.2f}{s['min_ms']:9.2f}{extra}")
        d = r3["delta_vs_lrun_plain"]
        c = r3["checks"]
        if "lrun-l5-warm" in d and "lrun-l5-cold" in d and "lrun-l100-cold" in d:
            print(
                f"  targets: warm <= plain + 1 ms: {d['lrun-l5-warm']['median_ms']:+.2f} ms (median),"
                f" {d['lrun-l5-warm']['mean_ms']:+.2f} (mean);"
                + (
                    f" idle <= plain + 1 ms: {d['lrun-l5-idle']['median_ms']:+.2f} ms (median);"
                    if "lrun-l5-idle" in d
                    else ""
                )
                +
                f" cold <= 1 ms/layer: 5 layers {d['lrun-l5-cold']['per_layer_median_ms']:.2f},"
                f" 100 layers {d['lrun-l100-cold']['per_layer_median_ms']:.2f} ms/layer (median)"
            )
        print(
            f"  checks: layers held by the warm holder {c.get('layers_held', ['?'])[0]}"
            f" ({c.get('layers_held', ['?', '?'])[1]} mounts); runs that were not cold:"
            f" {c.get('not_cold', ['?'])[0]}; left after the holder's delete:"
            f" {c.get('warm_after_delete', ['?'])[0]} entries, {c.get('warm_after_delete', ['?', '?'])[1]} mounts;"
            f" idle layers kept {c.get('idle_kept', ['?'])[0]}, after gc --drop-idle"
            f" {c.get('idle_after_drop', ['?'])[0]} entries, {c.get('idle_after_drop', ['?', '?'])[1]} mounts"
        )
        print()


def print_r4(res):
    r4 = res["items"]["4_concurrent"]
    print(f"4. {r4['containers']} x `run -d` at once, then {r4['containers']} x `delete --force`, ms wall")
    print(f"{'':44}{'start mean':>11}{'start min':>11}{'delete mean':>13}{'failures':>10}")
    for name in RUNTIMES:
        s = r4["results"].get(name)
        if s:
            print(
                f"  {name:42}{s['start']['mean_ms']:11.1f}{s['start']['min_ms']:11.1f}"
                f"{s['delete']['mean_ms']:13.1f}{s['failures']:10d}"
            )
    print(
        f"  {'ratio lrun/X, start mean':42}  crun {fmt_ratio(r4['ratio_start_mean'], 'lrun/crun')}"
        f"   runc {fmt_ratio(r4['ratio_start_mean'], 'lrun/runc')}"
    )
    print()


def print_r4b(res):
    r4b = res["items"].get("4b_concurrent_layers")
    if r4b:
        print(
            f"4b. {res['items']['4_concurrent']['containers']} x `lrun run -d` from the 5-layer package at once:"
            f" start mean {r4b['start']['mean_ms']:.1f} ms (min {r4b['start']['min_ms']:.1f}),"
            f" delete mean {r4b['delete']['mean_ms']:.1f} ms, failures {r4b['failures']}"
        )
        for i, c in enumerate(r4b["rounds"], 1):
            ok = "OK" if c["layer_mounts"] + c["loop_devices"] == r4b["distinct_layers"] else "NOT 5"
            print(
                f"    round {i}: layer mounts {c['layer_mounts']}, layer dirs {c['layer_dirs']},"
                f" loop devices on store images {c['loop_devices']},"
                f" overlays in the runtime's namespace {c['overlays']},"
                f" layer mounts after delete {c['layer_mounts_after_delete']}  [{ok}]"
            )
        print()


def print_r5(res):
    r5 = res["items"].get("5_big")
    if r5 and r5.get("lrun_cold"):
        t = r5["tree"]
        print(
            f"5. time to ready, ~1 GiB package: {t['files']} files, {t['bytes'] / 2**20:.0f} MiB"
            f" (erofs image {t['lrl_bytes'] / 2**20:.0f} MiB, .tar.zst {t['tar_zst_bytes'] / 2**20:.0f} MiB),"
            " cold page cache, ms"
        )
        print(f"{'':44}{'mean':>9}{'median':>9}{'min':>9}{'n':>5}")
        for key, label in (
            ("lrun_cold", "lrun run `cat FILE`, layer not mounted"),
            ("lrun_warm_cache", "  same, page cache warm"),
            ("lrun_plain_dir_cold", "  lrun run /bin/true, plain dir, cold cache"),
            ("tar_extract", "tar --zstd -xf (+ read FILE)"),
            ("tar_extract_sync", "tar --zstd -xf + sync"),
        ):
            s = r5.get(key)
            if s:
                print(f"  {label:42}{s['mean_ms']:9.1f}{s['median_ms']:9.1f}{s['min_ms']:9.1f}{s['n']:5d}")
        if "speedup_median" in r5:
            print(
                f"  speed-up (median): {r5['speedup_median']:.0f}x against extraction,"
                f" {r5['speedup_median_with_sync']:.0f}x with sync (target >= 100x);"
                f" runs not cold: {r5['runs_not_cold']}"
            )
        print()


def print_r6(res):
    r6 = res["items"]["6_rss"]["results"]
    print("6. peak RSS (KiB, /usr/bin/time %M), median of runs")
    print(f"{'':44}{'lrun':>9}{'crun':>9}{'runc':>9}{'lrun/crun':>11}{'lrun/runc':>11}")
    for cmd in ("create", "run"):
        d = r6.get(cmd)
        if not d:
            continue
        vals = "".join(f"{d[n]['median_kib']:9.0f}" if n in d else f"{'-':>9}" for n in RUNTIMES)
        print(
            f"  {cmd:42}{vals}{fmt_ratio(d['ratio_median'], 'lrun/crun'):>11}"
            f"{fmt_ratio(d['ratio_median'], 'lrun/runc'):>11}"
        )
    print()


def item_scale(work):
    rows = read_rows(os.path.join(work, "scale.tsv"))
    if not rows:
        return None
    by = {}
    for kind, n, *us in rows:
        d = by.setdefault(kind, {}).setdefault(n, {"list": [], "state": [], "create": [], "delete": []})
        for k, v in zip(("list", "state", "create", "delete"), us):
            d[k].append(int(v) / 1000)
    results = {
        kind: {n: {k: statistics.median(v) for k, v in d.items()} for n, d in per_n.items()}
        for kind, per_n in by.items()
    }
    conc = read_kv(os.path.join(work, "scale-conc.txt"))
    return {
        "what": "N containers existing (run -d of sleep, plain and from the 5-layer package): "
        "median ms of list, state, and create + delete of one more; then concurrent run -d "
        "from the 5-layer package in an empty root",
        "results": results,
        "concurrent": conc,
    }


def item_v2(work):
    rows = read_rows(os.path.join(work, "v2.txt"))
    if not rows:
        return None
    kv = {r[0]: r[1:] for r in rows}
    res = {}
    for n in ("lrun", "crun"):
        v = kv.get(f"v2_{n}")
        if v:
            res[n] = {"median_ms": float(v[0]), "mean_ms": float(v[1]), "min_ms": float(v[2]), "n": int(v[3])}
    out = {
        "what": "item 1 in a qemu TCG guest with only cgroup v2 (scripts/vm-test): hyperfine -N, "
        "lrun and crun taking turns; emulated, so only the ratio means anything",
        "results": res,
        "clone_into_cgroup": {n: int(kv[f"v2_clone_into_cgroup_{n}"][0]) for n in ("lrun", "crun") if f"v2_clone_into_cgroup_{n}" in kv},
        "kernel": kv.get("v2_kernel", ["?"])[0],
    }
    start = {}
    for n in ("lrun", "crun", "true"):
        v = kv.get(f"v2_start_{n}")
        if v:
            start[n] = {"median_ms": float(v[0]), "mean_ms": float(v[1]), "min_ms": float(v[2]), "n": int(v[3])}
    if start:
        out["bare_start"] = start
    if "lrun" in res and "crun" in res:
        out["ratio_median"] = res["lrun"]["median_ms"] / res["crun"]["median_ms"]
        out["ratio_mean"] = res["lrun"]["mean_ms"] / res["crun"]["mean_ms"]
    return out


def print_r1b(res):
    r = res["items"]["1b_run_v2"]
    print(f"1b. run /bin/true on cgroup v2 (qemu TCG guest, kernel {r['kernel']}), ms")
    print(f"{'':44}{'mean':>9}{'median':>9}{'min':>9}")
    for n, s in r["results"].items():
        print(f"  {n:42}{s['mean_ms']:9.2f}{s['median_ms']:9.2f}{s['min_ms']:9.2f}")
    if "ratio_median" in r:
        print(f"  ratio lrun/crun: median {r['ratio_median']:.2f}x, mean {r['ratio_mean']:.2f}x (target <= 0.6x)")
    b = r.get("bare_start", {})
    if b:
        print("  bare start-up, no container (`--version`; /bin/true for the exec alone), median ms: "
              + ", ".join(f"{k} {v['median_ms']:.2f}" for k, v in b.items()))
        if "lrun" in b and "crun" in r["results"]:
            floor = b["lrun"]["median_ms"] / r["results"]["crun"]["median_ms"]
            print(f"  floor: lrun's bare start-up alone is {floor:.2f}x crun's whole run")
    c = r.get("clone_into_cgroup", {})
    print("  clone3(CLONE_INTO_CGROUP) calls: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    print()


def print_r7(res):
    r7 = res["items"]["7_scale"]
    print("7. scale: N containers existing, median ms (list, state, create and delete of one more)")
    print(f"{'':20}{'N':>6}{'list':>9}{'state':>9}{'create':>9}{'delete':>9}")
    for kind, per_n in r7["results"].items():
        for n, d in sorted(per_n.items(), key=lambda x: int(x[0])):
            print(
                f"  {kind:18}{n:>6}{d['list']:9.2f}{d['state']:9.2f}{d['create']:9.2f}{d['delete']:9.2f}"
            )
    c = r7["concurrent"].get("conc")
    if c:
        after = r7["concurrent"].get("conc_after", ["?", "?"])
        print(
            f"  {c[0]} x run -d at once, 5 layers: {int(c[1]) / 1e6:.1f} s wall, failures {c[2]},"
            f" layer mounts {c[3]}, containers listed {c[4]}; after delete: {after[0]} mounts,"
            f" {after[1]} entries"
        )
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--wrap", default="")
    ap.add_argument("--wrap-note", default="")
    ap.add_argument("--load-before", default="")
    ap.add_argument("--load-after", default="")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--lrun-version", default="unknown")
    a = ap.parse_args()

    leaks_file = os.path.join(a.work, "leaks")
    leaks = os.path.exists(leaks_file) and open(leaks_file).read().strip() != "0"
    item1 = item_run(a.work)
    res = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_before": a.load_before,
        "load_after": a.load_after,
        "versions": {
            "lrun": a.lrun_version,
            "crun": version(["crun", "--version"]),
            "runc": version(["runc", "--version"]),
            "hyperfine": version(["hyperfine", "--version"]),
        },
        "wrapper": a.wrap,
        "wrapper_note": a.wrap_note,
        "items": {
            "1_run": item1,
            "1b_run_v2": item_v2(a.work),
            "2_lifecycle": item_lifecycle(a.work),
            "3_layers": item_layers(a.work, item1),
            "4_concurrent": item_concurrent(a.work),
            "4b_concurrent_layers": item_concurrent_layers(a.work),
            "5_big": item_big(a.work),
            "6_rss": item_rss(a.work),
            "7_scale": item_scale(a.work),
        },
        "cgroup_dirs_per_container": cgroups_created(a.work),
        "leaks": leaks,
        "elapsed_s": a.elapsed,
    }
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
        f.write("\n")
    print_table(res)
    print(f"results: {a.out}")


if __name__ == "__main__":
    main()
