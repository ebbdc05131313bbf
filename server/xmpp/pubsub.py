"""The PEP node options xferd supports (XEP-0060 §16.4.4 node_config, as
XEP-0163 uses them), said once for the PEP service (server/modules/pep.py)
and XEP-0227 import/export (storage/pie.py).

* ``pubsub#access_model``: ``open``, ``presence`` (XEP-0163 §5's default) or
  ``whitelist`` (the owner only); ``roster`` and ``authorize`` are not
  offered.
* ``pubsub#max_items``: 1 (the default) to :data:`MAX_ITEMS`; ``max`` means
  :data:`MAX_ITEMS`.
* ``pubsub#persist_items`` and ``pubsub#send_last_published_item`` are fixed
  by what the service implements (always persistent, never sent on
  presence): they can be asked for, but only those values can be met, and an
  import does not keep them.
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
#: … of which these are fixed: (field, the only value we meet)
FIXED_OPTIONS = {PERSIST_ITEMS: True, SEND_LAST_PUBLISHED_ITEM: "never"}

ACCESS_MODELS = ("open", "presence", "whitelist")
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
