"""The change journal's bookkeeping of this replica's own writes (genisys.store.journal):
the watch often answers with an entry before the transaction that wrote it does."""

from genisys.store.journal import Journal
from genisys.store.values import Entry

PREFIX = "g/changes/"
KEY = PREFIX + "services/web"


def journal(changed: list) -> Journal:
    return Journal(None, PREFIX, 30.0, changed.append, lambda reason: None)


def op(key=KEY):
    return {"KV": {"Verb": "set", "Key": key, "Value": ""}}


def written(index: int) -> dict:
    return {KEY: Entry(KEY, b"", index, index)}


def test_an_own_write_seen_by_the_watch_before_its_answer_is_not_read_again():
    changed = []
    log = journal(changed)
    entries = log.writing([op()])
    log._answered(10, {KEY: 10}, None)
    log.written(entries, written(10))
    assert changed == []


def test_another_write_seen_while_writing_is_read_once_the_write_ends():
    changed = []
    log = journal(changed)
    entries = log.writing([op()])
    log._answered(10, {KEY: 9}, None)  # someone else's entry, before this write
    assert changed == []
    log.written(entries, written(10))
    assert changed == [{KEY}]


def test_an_entry_seen_while_a_write_failed_is_read():
    changed = []
    log = journal(changed)
    entries = log.writing([op()])
    log._answered(10, {KEY: 10}, None)
    log.written(entries, {})  # refused: the entry at 10 was another writer's
    assert changed == [{KEY}]


def test_entries_not_being_written_are_read_at_once():
    changed = []
    log = journal(changed)
    log.writing([op(PREFIX + "services/api")])
    log._answered(10, {KEY: 10}, None)
    assert changed == [{KEY}]
