"""Name dictionaries that are freed: peers' made-up names must not stay for good.

libxml2 interns every element, attribute and prefix name and namespace URI of a
document in a string dictionary (``xmlDict``), and lxml makes every parser and
every new document of a thread share *one* such dictionary, which lives as
long as the thread. Strings are never removed from a dictionary. A peer that
sends names it makes up (``<e1/>``, ``<e2/>``, …), with or without a login,
would so grow the server's memory by ~40-110 bytes per name, forever: 16
million names over 800 connections took a server from 97 to 761 MiB.

A dictionary is reference-counted, though: every document and parser context
using it holds a reference, and lxml's per-thread record (a
``_ParserDictionaryContext`` in the thread state's dict, ``lxml/parser.pxi``)
holds one more. When that record is missing, lxml makes a new one whose
dictionary is a *child* of the startup dictionary: lookups find the startup
names there, new names go into the child. :func:`new_generation` drops the
record, so what lxml builds next gets a fresh child, and the old child is freed
as soon as the last document or parser using it is gone. lxml already copies
names between dictionaries when an element moves to a document with another
one (``moveNodeToDocument`` → ``fixThreadDictNames``), as it must for
threads; a copy (``deepcopy``, ``tostring``/``fromstring``) interns into the
target's dictionary. So mixing generations is safe, and memory for names
follows the documents that use them.

The stream parser (:mod:`.stream`) starts a generation for each lxml parser
and for each stanza it hands out, so a stanza keeps only its own names, a
parser only those of the input it read since it was created (it is renewed
every ``renew_after`` bytes) — and both give them back when they go.

One rule comes with it: lxml binds a parser to the thread's dictionary when
a document starts and, when the document ends (its end, an error,
``close()``), points the document at the thread's dictionary *of that moment*
(``initDocDict``), assuming it is the same one. A push parser (or iterparse)
that lives across generations must therefore be fed with its own generation
installed (:func:`private`, :func:`use`), as :class:`.stream.StreamParser`
does; otherwise libxml2 would later free strings its dictionary does not own,
and the process aborts. One-shot parsing (``fromstring``) is safe as is.

Before the first generation starts, :func:`seed` puts XMPP's common names in
the startup dictionary: those are then shared by all generations instead of
being copied into each stanza's own.

If lxml's thread record is not where this expects (another lxml or Python),
:func:`new_generation` does nothing and :data:`SUPPORTED` is False: names then
pile up as before, and the test suite's memory tests fail.
"""

from __future__ import annotations

import ctypes
import threading

from lxml import etree

KEY = "_ParserDictionaryContext"     # lxml's key in the thread state's dict
_local = threading.local()

# PyThreadState_GetDict returns a *borrowed* reference; with restype py_object
# ctypes would take it for a new one and drop a reference per call
_get_thread_state_dict = ctypes.PYFUNCTYPE(ctypes.c_void_p)(
    ("PyThreadState_GetDict", ctypes.pythonapi))


def thread_state_dict() -> dict | None:
    try:
        return _local.tsd
    except AttributeError:
        pass
    tsd = None
    address = _get_thread_state_dict()
    if address:
        candidate = ctypes.cast(address, ctypes.py_object).value
        etree.Element("x")              # makes lxml set up this thread's record
        record = candidate.get(KEY) if isinstance(candidate, dict) else None
        if type(record).__name__ == KEY:
            tsd = candidate
    _local.tsd = tsd
    return tsd


def new_generation() -> None:
    """From now on, names lxml interns in this thread go into a new dictionary,
    freed with the last document or parser that uses it."""
    tsd = thread_state_dict()
    if tsd is not None:
        tsd.pop(KEY, None)


def private() -> object | None:
    """A new generation for one lxml push parser, to be installed with
    :func:`use` around each of its ``feed()`` calls (the current generation
    is left as it was). None where unsupported.

    Not only its first feed: when a parse ends (an error, the end of the
    document), lxml points the document at the thread's *current*
    dictionary, assuming it is the one the parser used (``initDocDict``);
    were it another, libxml2 would later free strings it does not own."""
    tsd = thread_state_dict()
    if tsd is None:
        return None
    current = tsd.pop(KEY, None)
    etree.Element("x")            # a child of the startup dictionary, not a standalone one
    record = tsd.pop(KEY)
    if current is not None:
        tsd[KEY] = current
    return record


def use(record: object | None) -> object | None:
    """Install *record* (from :func:`private`, or what this returned) as the
    thread's generation; returns the one it replaces."""
    tsd = thread_state_dict()
    if tsd is None:
        return None
    previous = tsd.pop(KEY, None)
    if record is not None:
        tsd[KEY] = record
    return previous


SUPPORTED = thread_state_dict() is not None

#: names nearly every stanza uses: shared, not copied into each stanza's dictionary
_COMMON_NAMES = (
    "stream features message presence iq body subject thread show status priority "
    "error text query item group x c delay active composing paused inactive gone "
    "request received displayed markable origin-id stanza-id forwarded sent result "
    "ping bind session jid resource enable enabled r a sm starttls proceed auth "
    "success failure challenge response mechanisms mechanism register required "
    "optional identity feature ver hash node category name subscription ask approved "
    "to from id type by stamp code var xmlns db dialback verify"
).split()


def seed() -> None:
    """Intern XMPP's namespaces and common names in the startup dictionary.
    Only has an effect before the first :func:`new_generation` of the thread."""
    from . import namespaces
    uris = sorted({v for k, v in vars(namespaces).items()
                   if k.endswith("_NS") and isinstance(v, str)})
    root = etree.Element("seed", nsmap={"stream": namespaces.STREAMS_NS,
                                        "db": namespaces.DIALBACK_NS})
    for uri in uris:
        el = etree.SubElement(root, f"{{{uri}}}x")
        for name in _COMMON_NAMES:
            el.set(name, "")
            etree.SubElement(el, f"{{{uri}}}{name}")
    for name in _COMMON_NAMES:
        etree.SubElement(root, name)


if SUPPORTED and threading.current_thread() is threading.main_thread():
    seed()
