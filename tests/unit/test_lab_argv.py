"""How lab VMs are started and reached: QEMU argv, disks, ssh prefixes, the lab record."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from protocol.errors import LabError
from tests.conftest import need_binary
from workers.lab.lab import Lab, host_names, pool_command
from workers.lab.qemu import VmSpec, overlay_argv, pool_disk_argv, qemu_argv, run_qemu_img
from workers.lab.ssh import exec_prefix, shell_line
from workers.lab.vm import Vm, free_port


def _spec(tmp_path: Path, port: int = 40022, name: str = "zlab1") -> VmSpec:
    return VmSpec(
        name=name,
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        root_overlay=tmp_path / "root.qcow2",
        pool_disk=tmp_path / "pool.qcow2",
        ssh_port=port,
        serial_log=tmp_path / "serial.log",
        pidfile=tmp_path / "qemu.pid",
    )


def _option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_qemu_boots_the_image_kernel_with_tcg_and_loopback_only_ssh(tmp_path: Path) -> None:
    argv = qemu_argv(_spec(tmp_path))
    assert argv[0] == "qemu-system-x86_64"
    assert _option(argv, "-accel") == ["tcg,thread=multi"]
    assert _option(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    append = _option(argv, "-append")[0]
    assert "root=/dev/vda" in append and "console=ttyS0" in append
    assert "systemd.hostname=zlab1" in append
    # ssh is reachable only from this machine, never from the network.
    (netdev,) = _option(argv, "-netdev")
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev
    assert netdev.count("hostfwd") == 1
    # The overlay is the first disk (root, /dev/vda), the pool disk the second (/dev/vdb).
    drives = _option(argv, "-drive")
    assert drives[0].startswith(f"file={tmp_path / 'root.qcow2'},")
    assert drives[1].startswith(f"file={tmp_path / 'pool.qcow2'},")
    assert _option(argv, "-serial") == [f"file:{tmp_path / 'serial.log'}"]
    assert _option(argv, "-pidfile") == [str(tmp_path / "qemu.pid")]


def test_exec_prefix_reaches_root_on_the_forwarded_port(tmp_path: Path) -> None:
    prefix = exec_prefix(tmp_path / "id", 40022, tmp_path / "ssh.sock")
    assert prefix[0] == "ssh" and prefix[-1] == "root@127.0.0.1"
    assert prefix[prefix.index("-p") + 1] == "40022"
    assert prefix[prefix.index("-i") + 1] == str(tmp_path / "id")
    assert "BatchMode=yes" in prefix and "StrictHostKeyChecking=no" in prefix
    assert f"ControlPath={tmp_path / 'ssh.sock'}" in prefix
    # A prefix must never make its command the master: that command would hang its caller.
    assert not any(arg.startswith("ControlMaster") for arg in prefix)
    # What people paste is the same command.
    assert shlex.split(shell_line(prefix)) == prefix


def test_free_port_is_a_bindable_loopback_port() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _info(disk: Path) -> dict[str, object]:
    argv = ["qemu-img", "info", "--output=json", str(disk)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    info: dict[str, object] = json.loads(out)
    return info


def test_overlay_keeps_the_base_clean(tmp_path: Path) -> None:
    need_binary("qemu-img")
    base = tmp_path / "base.raw"
    base.write_bytes(b"\0" * (1 << 20))
    overlay = tmp_path / "root.qcow2"
    run_qemu_img(overlay_argv(base, overlay))
    run_qemu_img(pool_disk_argv(tmp_path / "pool.qcow2", 4))
    info = _info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "raw"
    pool = _info(tmp_path / "pool.qcow2")
    assert pool["virtual-size"] == 4 << 30
    with pytest.raises(LabError, match="failed"):
        run_qemu_img(overlay_argv(tmp_path / "missing.raw", tmp_path / "x.qcow2"))


def test_host_names_and_pool_command() -> None:
    assert host_names(2) == ["zlab1", "zlab2"]
    with pytest.raises(LabError):
        host_names(0)
    assert pool_command("tank").endswith("zpool create -f tank /dev/vdb")
    assert pool_command("tank").startswith("zpool list -H -o name tank")


def test_lab_record_round_trips(tmp_path: Path) -> None:
    vms = [
        Vm(spec=_spec(tmp_path / n, port, n), key=tmp_path / "id", directory=tmp_path / n, pid=p)
        for n, port, p in (("zlab1", 40022, 111), ("zlab2", 40023, 222))
    ]
    Lab(tmp_path, vms, "tank", ["zfs-2.3.2-2~bpo12+1", "zfs-2.3.2-2~bpo12+1"], 4242).save()
    loaded = Lab.load(tmp_path)
    assert loaded is not None
    assert loaded.owner_pid == 4242
    assert [h.ssh_port for h in loaded.hosts] == [40022, 40023]
    assert [vm.pid for vm in loaded.vms] == [111, 222]
    assert [h.name for h in loaded.hosts] == ["zlab1", "zlab2"]
    assert loaded.hosts[1].exec_prefix == tuple(vms[1].exec_prefix)
    assert loaded.vms[1].directory == tmp_path / "zlab2"
    assert Lab.load(tmp_path / "nothing-here") is None
