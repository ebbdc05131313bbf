"""The PEP node options xferd supports (XEP-0060 §17.4.4 node_config, as
XEP-0163 uses them), said once for the PEP service (server/modules/pep.py)
and XEP-0227 import/export (storage/pie.py).

* ``pubsub#access_model``: ``open``, ``presence`` (XEP-0163 §5's default),
  ``roster`` (contacts in one of ``pubsub#roster_groups_allowed``, XEP-0060
  §4.5) or ``whitelist`` (the owner only); ``authorize`` is not offered.
* ``pubsub#max_items``: 1 (the default) to :data:`MAX_ITEMS`; ``max`` means
  :data:`MAX_ITEMS`.
* ``pubsub#roster_groups_allowed`` and ``pubsub#send_last_published_item``
  (``on_sub_and_presence`` by default, XEP-0163 §4.3.4) live in the node's
  ``config``; an import keeps them there as given, so they are read through
  :func:`roster_groups_allowed` and :func:`send_last_published_item`.
* ``pubsub#persist_items`` is fixed by what the service implements (always
  persistent): it can be asked for, but only that value can be met, and an
  import does not keep it.

:func:`notify_nodes` is XEP-0060 §9.2's filter: the nodes a resource wants
notifications of are its ``NODE+notify`` disco features.
"""

from __future__ import annotations

from .namespaces import PUBSUB_NS

#: FORM_TYPEs of a node configuration form and of publish-options
NODE_CONFIG = PUBSUB_NS + "#node_config"
PUBLISH_OPTIONS = PUBSUB_NS + "#publish-options"

#: the fields of those forms
ACCESS_MODEL = "pubsub#access_model"
MAX_ITEMS_FIELD = "pubsub#max_items"
PERSIST_ITEMS = "pubsub#persist_items"
SEND_LAST_PUBLISHED_ITEM = "pubsub#send_last_published_item"
ROSTER_GROUPS_ALLOWED = "pubsub#roster_groups_allowed"
#: … of which these are fixed: (field, the only value we meet)
FIXED_OPTIONS = {PERSIST_ITEMS: True}

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
#: XEP-0060 §17.4.4's values of send_last_published_item; PEP's default (XEP-0163 §4.3.4)
SEND_LAST_VALUES = ("never", "on_sub", "on_sub_and_presence")
DEFAULT_SEND_LAST = "on_sub_and_presence"
NOTIFY_SUFFIX = "+notify"
DEFAULT_ACCESS = "presence"          # XEP-0163 §5
DEFAULT_MAX_ITEMS = 1
MAX_ITEMS = 256                      # what "max" means, and the most we keep


def parse_access_model(value: str) -> str:
    """A submitted access model; ValueError for one we do not offer."""
    if value not in ACCESS_MODELS:
        raise ValueError(f"{ACCESS_MODEL} {value!r} is not supported "
                         f"(we offer {', '.join(ACCESS_MODELS)})")
    return value


def parse_max_items(value: str) -> int:
    """A submitted max_items: 1 … MAX_ITEMS or ``max``; ValueError otherwise."""
    if value == "max":
        return MAX_ITEMS
    if not value.isdigit() or not 1 <= int(value) <= MAX_ITEMS:
        raise ValueError(f"{MAX_ITEMS_FIELD} must be 1…{MAX_ITEMS} or 'max'")
    return int(value)


def parse_send_last(value: str) -> str:
    """A submitted send_last_published_item; ValueError for another value."""
    if value not in SEND_LAST_VALUES:
        raise ValueError(f"{SEND_LAST_PUBLISHED_ITEM} must be one of "
                         f"{', '.join(SEND_LAST_VALUES)}")
    return value


def send_last_published_item(config: dict) -> str:
    """A node's send_last_published_item (its ``config``; default for anything else)."""
    value = config.get(SEND_LAST_PUBLISHED_ITEM)
    return value if value in SEND_LAST_VALUES else DEFAULT_SEND_LAST


def roster_groups_allowed(config: dict) -> frozenset[str]:
    """A node's roster_groups_allowed (its ``config``: a list, or one group as
    an import gives a single value)."""
    value = config.get(ROSTER_GROUPS_ALLOWED) or ()
    return frozenset([value] if isinstance(value, str) else value)


def notify_nodes(features) -> frozenset[str]:
    """XEP-0060 §9.2: the NodeIDs whose ``NodeID+notify`` is among *features*."""
    return frozenset(f[:-len(NOTIFY_SUFFIX)] for f in features
                     if f.endswith(NOTIFY_SUFFIX) and len(f) > len(NOTIFY_SUFFIX))
