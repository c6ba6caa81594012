#!/usr/bin/env python3
"""A CRI client standing in for the kubelet: the pod lifecycle against containerd's CRI, once per
runtime handler (lrun, then runc as the control), with the same checks. Run by scripts/cri-test
inside its sandbox (containerd already started, images imported, stubs generated on sys.path).

usage: cri_check.py SOCKET LOGDIR CONTAINERD_STATE HANDLER:STATE_ROOT... [--layer NAME@VERSION]
Prints "ok: HANDLER: CHECK" / "FAIL: HANDLER: CHECK: why" / "skipped: ..." lines, then one
"result HANDLER CHECK ok|fail|skip" line per check for the caller's comparison.
"""
import json
import os
import sys
import time
import uuid

import grpc

import api_pb2 as cri
import api_pb2_grpc as cri_grpc

IMAGE = "localhost/lrun-cri-busybox:1"
CALL_TIMEOUT = 30  # seconds per CRI call: a runtime that hangs fails the check, not the run
NODE, POD = cri.NODE, cri.POD


class Checks:
    def __init__(self, handler):
        self.handler = handler
        self.results = []  # (name, "ok"|"fail"|"skip", detail)

    def ok(self, name, cond, detail=""):
        self.results.append((name, "ok" if cond else "fail", "" if cond else detail))
        print(("ok: %s: %s" % (self.handler, name)) if cond
              else ("FAIL: %s: %s: %s" % (self.handler, name, detail)), flush=True)
        return cond

    def skip(self, name, why):
        self.results.append((name, "skip", why))
        print("skipped: %s: %s: %s" % (self.handler, name, why), flush=True)

    def call(self, name, fn, *args):
        """A CRI call that is itself a check: ok when it returns, fail with the gRPC error."""
        try:
            r = fn(*args, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            self.ok(name, False, "%s: %s" % (e.code(), e.details()))
            return None
        self.ok(name, True)
        return r


def wait_exited(rt, cid, secs=30):
    deadline = time.time() + secs
    st = None
    while time.time() < deadline:
        try:
            st = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid),
                                    timeout=CALL_TIMEOUT).status
        except grpc.RpcError:
            return None
        if st.state == cri.CONTAINER_EXITED:
            return st
        time.sleep(0.2)
    return st


def container_config(name, args, log, annotations=None, memory=0):
    res = cri.LinuxContainerResources(memory_limit_in_bytes=memory) if memory else None
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name),
        image=cri.ImageSpec(image=IMAGE),
        command=args[:1], args=args[1:],
        log_path=log,
        annotations=annotations or {},
        linux=cri.LinuxContainerConfig(
            resources=res,
            security_context=cri.LinuxContainerSecurityContext(
                namespace_options=cri.NamespaceOption(network=NODE, pid=POD, ipc=POD))))


def leftovers(ids, state_root, cgroup_parent, containerd_state):
    """What is left of the given ids anywhere on the node: state, cgroups, mounts, processes."""
    left = {}
    # The shim runs the runtime with --root STATE_ROOT/<namespace>.
    ns_root = os.path.join(state_root, "k8s.io")
    left["state"] = sorted(os.listdir(ns_root)) if os.path.isdir(ns_root) else []
    task_dir = os.path.join(containerd_state, "io.containerd.runtime.v2.task", "k8s.io")
    left["shim state"] = [d for d in (os.listdir(task_dir) if os.path.isdir(task_dir) else [])
                          if d in ids]
    cg = []
    for ctrl in sorted(os.listdir("/sys/fs/cgroup")):
        d = os.path.join("/sys/fs/cgroup", ctrl, cgroup_parent.lstrip("/"))
        if os.path.isdir(d):
            cg += ["%s/%s" % (ctrl, e) for e in os.listdir(d)
                   if os.path.isdir(os.path.join(d, e))]
    left["cgroups"] = cg
    with open("/proc/self/mountinfo") as f:
        left["mounts"] = [ln.split()[4] for ln in f
                          if any(i in ln for i in ids) or state_root in ln]
    procs = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(i in cmd for i in ids) or "lrun-cri-marker" in cmd:
            procs.append("%s: %s" % (p, cmd.strip()[:100]))
    left["processes"] = procs
    return left


def bundle_annotations(containerd_state, cid):
    """The annotations of the config.json containerd wrote for the runtime."""
    p = os.path.join(containerd_state, "io.containerd.runtime.v2.task", "k8s.io", cid,
                     "config.json")
    try:
        with open(p) as f:
            return json.load(f).get("annotations", {})
    except (OSError, ValueError):
        return {}


def force_cleanup(rt, pod_ids):
    for pid in pod_ids:
        for fn, req in ((rt.StopPodSandbox, cri.StopPodSandboxRequest),
                        (rt.RemovePodSandbox, cri.RemovePodSandboxRequest)):
            try:
                fn(req(pod_sandbox_id=pid), timeout=CALL_TIMEOUT)
            except grpc.RpcError:
                pass


def pod_config(name, uid, logdir, cgroup_parent, annotations):
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="lrun-cri"),
        # no hostname: a hostNetwork pod shares the node's UTS namespace (kubelet sets none)
        log_directory=logdir,
        annotations=annotations,
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=cri.LinuxSandboxSecurityContext(
                namespace_options=cri.NamespaceOption(network=NODE, pid=POD, ipc=POD))))


def exec_check(c, rt, name, cid, cmd, want):
    try:
        e = rt.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=20),
                        timeout=CALL_TIMEOUT)
        return c.ok(name, e.stdout == want, "got %r %r exit %d" % (e.stdout, e.stderr, e.exit_code))
    except grpc.RpcError as err:
        return c.ok(name, False, "%s: %s" % (err.code(), err.details()))


LAYER_PROBE = ["sh", "-c", "cat /layer-marker; test -e /image-marker && echo image-root"]


def run_layered_pod(rt, c, handler, state_root, logdir, containerd_state, layer):
    """The Kubernetes way: the pod's annotations name the layers (the kubelet passes a pod's
    annotations, never per-container ones); the app container gets the layered root, the
    pause container keeps its image."""
    tag = uuid.uuid4().hex[:8]
    cgroup_parent = "/lrun-cri-test/%s-layered-%s" % (handler, tag)
    cfg = pod_config("layered-pod-" + handler, tag, logdir, cgroup_parent,
                     {"org.lrun.layers": layer, "org.lrun.layers.upper": "tmpfs,size=16m"})
    r = c.call("layered pod: RunPodSandbox (the pause container is not layered)",
               rt.RunPodSandbox, cri.RunPodSandboxRequest(config=cfg, runtime_handler=handler))
    if r is None:
        return
    pod = r.pod_sandbox_id
    ids = [pod]
    try:
        r = c.call("layered pod: CreateContainer", rt.CreateContainer, cri.CreateContainerRequest(
            pod_sandbox_id=pod, sandbox_config=cfg, config=container_config(
                "app", ["sh", "-c", "while :; do sleep 1; done # lrun-cri-marker"], "app.log")))
        if r is not None:
            ids.append(r.container_id)
            if c.call("layered pod: StartContainer", rt.StartContainer,
                      cri.StartContainerRequest(container_id=r.container_id)) is not None:
                exec_check(c, rt, "layered pod: the container's root is the layer", r.container_id,
                           LAYER_PROBE, b"from-the-layer\n")
            c.call("layered pod: StopContainer", rt.StopContainer,
                   cri.StopContainerRequest(container_id=r.container_id, timeout=2))
            c.call("layered pod: RemoveContainer", rt.RemoveContainer,
                   cri.RemoveContainerRequest(container_id=r.container_id))
        c.call("layered pod: StopPodSandbox", rt.StopPodSandbox,
               cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.call("layered pod: RemovePodSandbox", rt.RemovePodSandbox,
               cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
        time.sleep(1)
        for what, items in leftovers(ids, state_root, cgroup_parent, containerd_state).items():
            c.ok("layered pod: nothing left afterwards: %s" % what, not items,
                 "; ".join(items[:5]))
    finally:
        force_cleanup(rt, [pod])


def run_handler(rt, handler, state_root, logdir, containerd_state, layer):
    c = Checks(handler)
    tag = uuid.uuid4().hex[:8]
    cgroup_parent = "/lrun-cri-test/%s-%s" % (handler, tag)
    podlogs = os.path.join(logdir, handler)
    os.makedirs(podlogs, exist_ok=True)
    # One annotation the lrun handler's allowlist passes (org.lrun.*), one it does not.
    pod_cfg = pod_config("pod-" + handler, tag, podlogs, cgroup_parent,
                         {"org.lrun.cri-test": "from-the-pod", "example.com/cri-test": "dropped"})
    r = c.call("RunPodSandbox (locally built pause image)", rt.RunPodSandbox,
               cri.RunPodSandboxRequest(config=pod_cfg, runtime_handler=handler))
    if r is None:
        return c.results
    pod = r.pod_sandbox_id
    ids = [pod]
    try:
        st = rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=pod),
                                 timeout=CALL_TIMEOUT).status
        c.ok("PodSandboxStatus is READY", st.state == cri.SANDBOX_READY, str(st.state))

        def create(name, args, **kw):
            r = c.call("CreateContainer %s" % name, rt.CreateContainer, cri.CreateContainerRequest(
                pod_sandbox_id=pod, config=container_config(name, args, name + ".log", **kw),
                sandbox_config=pod_cfg))
            if r is None:
                return None
            ids.append(r.container_id)
            if c.call("StartContainer %s" % name, rt.StartContainer,
                      cri.StartContainerRequest(container_id=r.container_id)) is None:
                return None
            return r.container_id

        # A long-running container that ignores SIGTERM: exec, status, logs, stop after grace.
        main = create("main", ["sh", "-c", "trap '' TERM; echo hello-from-main; "
                               "while :; do sleep 1; done # lrun-cri-marker"])
        if main:
            st = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=main),
                                    timeout=CALL_TIMEOUT).status
            c.ok("ContainerStatus is RUNNING", st.state == cri.CONTAINER_RUNNING,
                 "state %s" % st.state)
            try:
                e = rt.ExecSync(cri.ExecSyncRequest(
                    container_id=main, cmd=["sh", "-c", "echo out; echo err >&2; exit 5"],
                    timeout=20), timeout=CALL_TIMEOUT)
                c.ok("ExecSync output and exit code",
                     (e.stdout, e.stderr, e.exit_code) == (b"out\n", b"err\n", 5),
                     "got %r %r %d" % (e.stdout, e.stderr, e.exit_code))
            except grpc.RpcError as err:
                c.ok("ExecSync output and exit code", False, "%s: %s" % (err.code(), err.details()))
            time.sleep(0.5)
            try:
                with open(os.path.join(podlogs, "main.log")) as f:
                    log = f.read()
            except OSError as err:
                log = str(err)
            c.ok("container log written (CRI format)", " stdout F hello-from-main" in log,
                 repr(log[:200]))
            ann = bundle_annotations(containerd_state, main)
            if handler != "lrun":
                c.skip("annotations org.lrun.* pass through", "no allowlist for %s" % handler)
            else:
                c.ok("annotations org.lrun.* pass through (pod_annotations), others do not",
                     ann.get("org.lrun.cri-test") == "from-the-pod"
                     and "example.com/cri-test" not in ann, repr(ann))
                print("note: %s: the pod sandbox (pause) container gets pod annotations too: %s"
                      % (handler, "org.lrun.cri-test" in bundle_annotations(containerd_state, pod)))
            t0 = time.time()
            if c.call("StopContainer (ignores SIGTERM, grace 2s)", rt.StopContainer,
                      cri.StopContainerRequest(container_id=main, timeout=2)) is not None:
                el = time.time() - t0
                c.ok("StopContainer kills after the grace period, not later",
                     1.5 <= el <= 10, "took %.1fs" % el)
                st = wait_exited(rt, main, 5)
                c.ok("stopped container: EXITED, 137", st is not None and
                     st.state == cri.CONTAINER_EXITED and st.exit_code == 137,
                     "state %s exit %s" % (st and st.state, st and st.exit_code))

        # A container exiting 3.
        three = create("three", ["sh", "-c", "exit 3"])
        if three:
            st = wait_exited(rt, three)
            c.ok("exit code 3 reported (reason Error)", st is not None and
                 st.exit_code == 3 and st.reason == "Error",
                 "state %s exit %s reason %r" % (st and st.state, st and st.exit_code,
                                                st and st.reason))

        # An OOM-killed container.
        oom = create("oom", ["awk", "BEGIN { s = \"lrun-cri-marker\"; while (1) s = s s }"],
                     memory=32 << 20)
        if oom:
            st = wait_exited(rt, oom)
            c.ok("OOM kill reported (OOMKilled, 137)", st is not None and
                 st.exit_code == 137 and st.reason == "OOMKilled",
                 "state %s exit %s reason %r" % (st and st.state, st and st.exit_code,
                                                st and st.reason))

        # A container whose root is a layer package, chosen by annotations (lrun only).
        if handler != "lrun":
            c.skip("layered roots from org.lrun.layers", "%s has no layers" % handler)
        elif not layer:
            c.skip("layered roots from org.lrun.layers", "no layer was prepared")
        else:
            lay = create("layered", ["sh", "-c", "while :; do sleep 1; done # lrun-cri-marker"],
                         annotations={"org.lrun.layers": layer,
                                      "org.lrun.layers.upper": "tmpfs,size=16m"})
            if lay:
                exec_check(c, rt, "layered root from container annotations (not the image's)",
                           lay, LAYER_PROBE, b"from-the-layer\n")
                c.call("StopContainer layered", rt.StopContainer,
                       cri.StopContainerRequest(container_id=lay, timeout=2))

        for cid, name in zip(ids[1:], ["main", "three", "oom", "layered"]):
            c.call("RemoveContainer %s" % name, rt.RemoveContainer,
                   cri.RemoveContainerRequest(container_id=cid))
        try:
            left = rt.ListContainers(cri.ListContainersRequest(
                filter=cri.ContainerFilter(pod_sandbox_id=pod)), timeout=CALL_TIMEOUT).containers
            c.ok("no containers listed after RemoveContainer", len(left) == 0,
                 "%d left" % len(left))
        except grpc.RpcError as err:
            c.ok("no containers listed after RemoveContainer", False, str(err.code()))
        c.call("StopPodSandbox", rt.StopPodSandbox, cri.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.call("RemovePodSandbox", rt.RemovePodSandbox,
               cri.RemovePodSandboxRequest(pod_sandbox_id=pod))
        time.sleep(1)
        for what, items in leftovers(ids, state_root, cgroup_parent, containerd_state).items():
            c.ok("nothing left afterwards: %s" % what, not items, "; ".join(items[:5]))
    finally:
        force_cleanup(rt, [pod])
    if handler == "lrun" and layer:
        run_layered_pod(rt, c, handler, state_root, podlogs, containerd_state, layer)
    return c.results


def main():
    args = sys.argv[1:]
    layer = None
    if "--layer" in args:
        i = args.index("--layer")
        layer = args[i + 1]
        del args[i:i + 2]
    sock, logdir, containerd_state, handlers = args[0], args[1], args[2], args[3:]
    ch = grpc.insecure_channel("unix://" + sock)
    rt = cri_grpc.RuntimeServiceStub(ch)
    v = rt.Version(cri.VersionRequest(), timeout=CALL_TIMEOUT)
    print("cri-test: %s %s (CRI %s)" % (v.runtime_name, v.runtime_version, v.runtime_api_version))
    for h in handlers:
        handler, state_root = h.split(":", 1)
        for name, res, _ in run_handler(rt, handler, state_root, logdir, containerd_state, layer):
            print("result %s %s %s" % (handler, res, name))


if __name__ == "__main__":
    main()
