"""The words several layers share: a deployment's color and a deploy's notification events.
Pure, importing nothing of Bascule's, so that any module may use them without reaching the
modules that define what is done with them (the manifests, the messages, the config)."""

from __future__ import annotations

from typing import Literal, get_args

# The two Deployments of an app, told apart by the bascule.io/color label.
Color = Literal["blue", "green"]
COLORS: tuple[Color, ...] = get_args(Color)

# The stages of a deploy that are notified (notifications.on in the config).
Event = Literal[
    "started",
    "awaiting-approval",
    "succeeded",
    "rolled-back",
    "failed",
    "rejected",
    "approval-timed-out",
    "aborted",
]
EVENTS: tuple[Event, ...] = get_args(Event)
