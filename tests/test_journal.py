"""The change journal's bookkeeping of this replica's own writes (genisys.store.journal):
the watch often answers with an entry before the transaction that wrote it does."""

import base64
import json

from genisys.store.journal import Journal, batch_names
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
    assert changed == [{KEY: 9}]


def test_an_entry_seen_while_a_write_failed_is_read():
    changed = []
    log = journal(changed)
    entries = log.writing([op()])
    log._answered(10, {KEY: 10}, None)
    log.written(entries, {})  # refused: the entry at 10 was another writer's
    assert changed == [{KEY: 10}]


def test_entries_not_being_written_are_read_at_once():
    changed = []
    log = journal(changed)
    log.writing([op(PREFIX + "services/api")])
    log._answered(10, {KEY: 10}, None)
    assert changed == [{KEY: 10}]


def test_a_batch_entry_names_the_services_to_read():
    changed = []
    log = journal(changed)
    batch = PREFIX + "batch/3f2a"
    log._batches = {batch: ["web", "api"]}
    log._answered(10, {batch: 10}, None)
    assert changed == [{PREFIX + "services/web": 10, PREFIX + "services/api": 10}]


def test_a_batch_entry_that_names_no_valid_service_names_none():
    value = base64.b64encode(json.dumps(["web", "../etc", 3]).encode()).decode()
    assert batch_names(value) == ["web"]
    assert batch_names(base64.b64encode(b"not json").decode()) == []
    assert batch_names(None) == []
