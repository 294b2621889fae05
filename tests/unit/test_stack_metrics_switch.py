"""The environment `ordermesh up` gives each app process: its metrics port, unless
ORDERMESH_METRICS=off (how the pipeline bench measures the stack without metrics)."""

import pytest

from devstack import stack
from devstack.ports import Ports

PORTS = Ports(metrics_base=16100)


@pytest.mark.parametrize("switch", [None, "", "on", " ON "])
def test_each_process_serves_metrics_on_its_own_port_by_default(switch: str | None) -> None:
    env = {"ORDERMESH_ENV": "development"}
    if switch is not None:
        env["ORDERMESH_METRICS"] = switch
    assert stack.process_env("relay", PORTS, env) == {
        **env,
        "ORDERMESH_METRICS_PORT": str(stack.metrics_port("relay", PORTS)),
    }
    replica = stack.process_env("worker-inventory_manager-2", PORTS, env)
    assert replica["ORDERMESH_METRICS_PORT"] == str(
        stack.metrics_port("worker-inventory_manager-2", PORTS)
    )


def test_metrics_off_leaves_out_the_port_even_an_inherited_one() -> None:
    env = {"ORDERMESH_METRICS": "off", "ORDERMESH_METRICS_PORT": "16100", "PATH": "/bin"}
    assert stack.process_env("api", PORTS, env) == {"ORDERMESH_METRICS": "off", "PATH": "/bin"}
    assert not stack.metrics_served(env)


def test_a_malformed_switch_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="ORDERMESH_METRICS='no'"):
        stack.process_env("api", PORTS, {"ORDERMESH_METRICS": "no"})
