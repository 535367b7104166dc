"""Shared fixtures. `native_stack` is a real stack started by the same code as `rig up --native`.

Other test modules use it as is, or override `native_stack_options` (e.g. agents=1) in their own
conftest/module to get a differently shaped stack. Ports are shifted by TEST_PORT_OFFSET so the
suite does not collide with a stack a developer runs on the default ports.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rig import native

TEST_PORT_OFFSET = 1000


@pytest.fixture(scope="session")
def native_stack_options(tmp_path_factory: pytest.TempPathFactory) -> native.NativeOptions:
    run_dir = tmp_path_factory.mktemp("native-stack")
    return native.NativeOptions(
        agents=0,  # the tests that use it need livekit-server and Prometheus only
        loadgen_workers=0,
        run_dir=run_dir,
        port_offset=TEST_PORT_OFFSET,
        env_file=run_dir / ".env",  # generated with fresh random credentials
    )


@pytest.fixture(scope="session")
def native_stack(native_stack_options: native.NativeOptions) -> Iterator[native.StackInfo]:
    """A running native stack (StackInfo: URLs, ports, credentials, pids); stopped after the session."""
    stack = native.NativeStack(native_stack_options)
    info = stack.start()  # a StackError here fails the tests with its message
    try:
        yield info
    finally:
        left = stack.stop()
        if left:
            raise AssertionError(f"native stack teardown left processes running: {left}")
