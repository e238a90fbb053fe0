# Copyright: (c) 2026, VisionSuit contributors
# SPDX-License-Identifier: GPL-3.0-or-later
"""gpu/instances.py: how many ComfyUI instances a host runs and where, on every recorded host; the filter
comfyui_instance_plan that roles call.
"""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.visionsuit.gpuworker.plugins.filter.instances import FilterModule
from tests.gpu_hosts import FIXTURES, detect_case
from visionsuit_gpuworker.errors import GpuWorkerError
from visionsuit_gpuworker.gpu.instances import plan_instances

#: today's single service, which a host with one instance keeps exactly
SINGLE = {"index": 0, "gpu": None, "unit": "comfyui.service", "port": 8188, "env": {},
          "instance_dir": "/opt/comfyui", "temp_dir": "/opt/comfyui/temp", "user_dir": "/opt/comfyui/user"}

CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "sys").is_dir())
#: recorded host -> (accelerator, instances with auto)
AUTO = {"amd-apu": ("cpu", 1), "amd-mi210": ("amd", 1), "amd-w7900-x4": ("amd", 4), "bmc-only": ("cpu", 1),
        "intel-nvidia": ("nvidia", 1), "none": ("cpu", 1), "nvidia-bmc-igpu": ("nvidia", 1),
        "nvidia-h100": ("nvidia", 1), "nvidia-hgx-h100": ("nvidia", 8), "nvidia-l40s-x2": ("nvidia", 2),
        "nvidia-mixed": ("nvidia", 2)}


def plan_for(case, instances="auto", **kwargs):
    det = detect_case(case)
    return plan_instances(det["render_gpus"], det["accelerator"], instances, **kwargs)


def nvidia_env(index):
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(index)}

# ------------------------------------------------------------------------------------------------- auto


def test_every_recorded_host_is_in_the_table():
    assert sorted(AUTO) == CASES


@pytest.mark.parametrize("case", CASES)
def test_auto_on_every_recorded_host(case):
    accelerator, count = AUTO[case]
    assert detect_case(case)["accelerator"] == accelerator
    plan = plan_for(case)
    assert len(plan) == count
    if count == 1:
        assert plan == [SINGLE]  # today's comfyui.service, paths, port, no device variable
        return
    assert [i["index"] for i in plan] == list(range(count))
    assert [i["gpu"] for i in plan] == list(range(count))
    assert [i["port"] for i in plan] == [8188 + n for n in range(count)]
    assert [i["unit"] for i in plan] == ["comfyui@%d.service" % n for n in range(count)]
    assert len({i["temp_dir"] for i in plan} | {i["user_dir"] for i in plan}) == 2 * count


def test_auto_on_the_hgx_host():
    plan = plan_for("nvidia-hgx-h100")
    assert plan[3] == {"index": 3, "gpu": 3, "unit": "comfyui@3.service", "port": 8191, "env": nvidia_env(3),
                       "instance_dir": "/opt/comfyui/instances/3", "temp_dir": "/opt/comfyui/instances/3/temp",
                       "user_dir": "/opt/comfyui/instances/3/user"}
    assert [i["env"]["CUDA_VISIBLE_DEVICES"] for i in plan] == [str(n) for n in range(8)]


def test_auto_on_the_amd_host_uses_hip():
    plan = plan_for("amd-w7900-x4", install_dir="/srv/comfyui/", base_port=9000)
    assert [i["env"] for i in plan] == [{"HIP_VISIBLE_DEVICES": str(n)} for n in range(4)]
    assert plan[1]["temp_dir"] == "/srv/comfyui/instances/1/temp" and plan[1]["port"] == 9001


def test_instances_follow_the_gpu_index_not_the_bus():
    gpus = [{"index": 1, "vendor": "amd", "pci_address": "0000:03:00.0"},
            {"index": 0, "vendor": "amd", "pci_address": "0000:c3:00.0"},
            {"index": None, "vendor": "amd", "pci_address": "0000:e3:00.0"},  # not shown by the runtime
            {"index": 0, "vendor": "nvidia"}]  # another vendor's numbering
    assert [(i["index"], i["gpu"]) for i in plan_instances(gpus, "amd")] == [(0, 0), (1, 1)]

# ------------------------------------------------------------------------------------------- a number N


def test_a_number_uses_the_first_gpus():
    plan = plan_for("nvidia-hgx-h100", 3)
    assert [(i["gpu"], i["port"], i["unit"]) for i in plan] == [
        (0, 8188, "comfyui@0.service"), (1, 8189, "comfyui@1.service"), (2, 8190, "comfyui@2.service")]
    assert plan_for("nvidia-hgx-h100", "8") == plan_for("nvidia-hgx-h100")  # a string from YAML/Jinja


def test_one_instance_on_a_multi_gpu_host_is_todays_service():
    assert plan_for("nvidia-hgx-h100", 1) == [SINGLE]  # sees every GPU, as before


def test_more_instances_than_gpus_is_an_error():
    with pytest.raises(GpuWorkerError) as err:
        plan_for("nvidia-l40s-x2", 3)
    assert str(err.value) == ("comfyui_instances: 3 instances but only 2 GPU(s) to run them on (this host's nvidia "
                              "GPUs: 0, 1) (allowed: auto, a number of instances (1 or more), or a list of GPU "
                              "indexes)")

# ---------------------------------------------------------------------------------------------------- CPU


def test_cpu_hosts_run_any_number_without_a_device():
    plan = plan_for("none", 2)
    assert [(i["unit"], i["port"], i["gpu"], i["env"]) for i in plan] == [
        ("comfyui@0.service", 8188, None, {}), ("comfyui@1.service", 8189, None, {})]
    assert plan[1]["user_dir"] == "/opt/comfyui/instances/1/user"
    assert plan_instances([], "cpu") == [SINGLE]


def test_a_gpu_host_set_up_for_cpu_ignores_its_gpus():
    det = detect_case("nvidia-l40s-x2")
    assert plan_instances(det["render_gpus"], "cpu") == [SINGLE]
    assert [i["env"] for i in plan_instances(det["render_gpus"], "cpu", 2)] == [{}, {}]


def test_a_list_on_a_cpu_host_is_an_error():
    with pytest.raises(GpuWorkerError, match=r"^comfyui_instances: GPU 0 does not exist \(this is a CPU host\)"):
        plan_for("bmc-only", [0])

# ------------------------------------------------------------------------------------------------- a list


def test_a_list_pins_in_the_given_order():
    plan = plan_for("nvidia-hgx-h100", [6, 2, "7"])
    assert [(i["index"], i["gpu"], i["port"], i["env"]) for i in plan] == [
        (0, 6, 8188, nvidia_env(6)), (1, 2, 8189, nvidia_env(2)), (2, 7, 8190, nvidia_env(7))]


def test_a_one_gpu_list_keeps_the_single_service_but_pins_it():
    plan = plan_for("nvidia-hgx-h100", [5])
    assert plan == [dict(SINGLE, gpu=5, env=nvidia_env(5))]


@pytest.mark.parametrize(("value", "message"), [
    ([8], "GPU 8 does not exist (this host's nvidia GPUs: 0, 1, 2, 3, 4, 5, 6, 7)"),
    ([1, 1], "GPU 1 is listed twice"),
    ([], "the list of GPU indexes is empty"),
    (["a"], "'a' is not a GPU index"),
    ([True], "True is not a GPU index"),
    ([-1], "GPU -1 does not exist"),
    (0, "0 instances: at least 1 is needed"),
    (-2, "-2 instances: at least 1 is needed"),
    ("many", "'many' is not a valid value"),
    (None, "None is not a valid value"),
    (True, "True is not a valid value"),
    (1.5, "1.5 is not a valid value"),
    ({"gpus": 2}, "{'gpus': 2} is not a valid value"),
])
def test_bad_values_name_the_variable_and_the_allowed_values(value, message):
    with pytest.raises(GpuWorkerError) as err:
        plan_for("nvidia-hgx-h100", value)
    assert err.value.field == "comfyui_instances"
    assert message in str(err.value)
    assert str(err.value).endswith("(allowed: auto, a number of instances (1 or more), or a list of GPU indexes)")


def test_auto_is_case_insensitive_and_the_names_can_be_the_callers():
    assert plan_for("nvidia-l40s-x2", " AUTO ") == plan_for("nvidia-l40s-x2")
    with pytest.raises(GpuWorkerError, match=r"^my_instances: 9 instances"):
        plan_for("nvidia-l40s-x2", 9, names={"instances": "my_instances"})

# -------------------------------------------------------------------------------------- ports, other input


def test_ports_beyond_65535_are_an_error():
    assert plan_for("nvidia-hgx-h100", base_port=65528)[-1]["port"] == 65535
    with pytest.raises(GpuWorkerError) as err:
        plan_for("nvidia-hgx-h100", base_port=65529)
    assert str(err.value) == ("comfyui_instances: 8 instances from port 65529 need ports up to 65536, above 65535 "
                              "(lower comfyui_port or comfyui_instances)")
    assert plan_for("none", base_port=65535) == [dict(SINGLE, port=65535)]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"base_port": 0}, "comfyui_port"), ({"base_port": 70000}, "comfyui_port"), ({"base_port": "x"}, "comfyui_port"),
    ({"base_port": True}, "comfyui_port"), ({"install_dir": "opt/comfyui"}, "comfyui_install_dir"),
    ({"install_dir": "/"}, "comfyui_install_dir"), ({"install_dir": None}, "comfyui_install_dir"),
])
def test_bad_port_or_directory(kwargs, field):
    with pytest.raises(GpuWorkerError) as err:
        plan_for("none", **kwargs)
    assert err.value.field == field


def test_bad_accelerator():
    with pytest.raises(GpuWorkerError) as err:
        plan_instances([], "intel")
    assert str(err.value) == "accelerator: 'intel' is not a known value (allowed: nvidia, amd, cpu)"


def test_no_indexed_gpu_on_a_gpu_host():
    gpus = [{"index": None, "vendor": "nvidia", "driver": "vfio-pci"}]
    assert plan_instances(gpus, "nvidia") == [SINGLE]
    with pytest.raises(GpuWorkerError, match="this host has no nvidia GPU with an index"):
        plan_instances(gpus, "nvidia", 2)

# ------------------------------------------------------------------------------------------------- filter


FILTER = FilterModule().filters()["comfyui_instance_plan"]


def test_filter_takes_the_fact_or_its_gpu_list():
    det = detect_case("amd-w7900-x4")
    assert FILTER(det) == plan_instances(det["render_gpus"], "amd")
    assert FILTER(det["render_gpus"], 2) == plan_instances(det["render_gpus"], "amd", 2)  # vendor from the list
    assert FILTER(det, "auto", 8188, "/opt/comfyui", accelerator="cpu") == [SINGLE]  # gpu_driver_vendor: cpu
    assert FILTER({}, 2)[1]["unit"] == "comfyui@1.service"  # no detection: a CPU host
    assert FILTER(None) == [SINGLE]


def test_filter_errors_are_filter_errors_naming_the_variable():
    with pytest.raises(AnsibleFilterError, match=r"^comfyui_instances: GPU 9 does not exist"):
        FILTER(detect_case("nvidia-hgx-h100"), [9])
    with pytest.raises(AnsibleFilterError, match="the input must be the gpu_worker fact"):
        FILTER("nvidia")
