"""Collections: the rules, the decode filter that skips objects outside them, the index column
they fill, and the shape of API key tokens (no services; LanceDB in a tmp dir)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.events import ObjectCreated
from tests.durable_stack import one_object_embeddings
from workers.access.api_keys import TOKEN_PREFIX, split_token
from workers.access.collections import DEFAULT_COLLECTION, Collections
from workers.decode.filters import EventFilter
from workers.index.writer import SegmentIndex
from workers.search.query import SearchQuery, where_clause
from workers.settings import DecodeSettings, IndexSettings

RULES = "news=media/news/,archive;talks=media/talks/;breaking=media/news/breaking/"


def test_the_longest_matching_source_wins_and_nothing_is_in_two_collections() -> None:
    c = Collections.parse(RULES)
    assert c.names == ["news", "talks", "breaking"]
    assert c.of("media", "news/a.mp4") == "news"
    assert c.of("media", "news/breaking/a.mp4") == "breaking"  # more specific than news
    assert c.of("archive", "anything.mp4") == "news"
    assert c.of("media", "talks/x.mp4") == "talks"
    assert c.of("media", "other/x.mp4") is None
    assert c.of(None, None) is None  # a file:// or http source: in no S3 rule


def test_nothing_configured_is_one_default_collection_of_everything() -> None:
    c = Collections.load("", "")
    assert not c.configured and c.names == [DEFAULT_COLLECTION]
    assert c.of("any", "key") == c.of(None, None) == DEFAULT_COLLECTION


def test_a_toml_file_wins_over_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "collections.toml"
    path.write_text('[collections.lectures]\nsources = ["uni/lectures/", "*"]\n')
    c = Collections.load(RULES, str(path))
    assert c.names == ["lectures"] and c.of("uni", "lectures/1.mp4") == c.of("x", "y") == "lectures"


@pytest.mark.parametrize("bad", ["news", "News=media", "a=media;a=other", "x=/prefix", "x="])
def test_bad_rules_are_refused_with_a_reason(bad: str) -> None:
    with pytest.raises((ValueError, ValidationError)):
        Collections.parse(bad)


def test_decode_skips_an_object_in_no_collection_and_says_which_rules() -> None:
    f = EventFilter.from_settings(DecodeSettings(collections=RULES))
    inside = ObjectCreated(uri="s3://media/news/a.mp4", bucket="media", key="news/a.mp4")
    outside = ObjectCreated(uri="s3://media/cats/a.mp4", bucket="media", key="cats/a.mp4")
    assert f.rejects(inside) is None
    assert f.rejects(outside) == "collection"
    assert "in no collection of news=media/news/,archive/" in f.explain("collection")
    assert EventFilter.from_settings(DecodeSettings()).rejects(outside) is None  # no rules: everything


@pytest.mark.impure
def test_the_index_files_each_row_under_its_objects_collection(tmp_path: Path) -> None:
    settings = IndexSettings(index_uri=str(tmp_path), collections="talks=media/talks/")
    index = SegmentIndex(settings)
    index.upsert(one_object_embeddings(2, "talks/a.mp4", 8) + one_object_embeddings(1, "cats/b.mp4", 8))
    table = index.table()
    assert table is not None
    by_key = {r["key"]: r["collection"] for r in table.search().select(["key", "collection"]).to_list()}
    assert by_key == {"talks/a.mp4": "talks", "cats/b.mp4": ""}  # in no collection: seen by no key


def test_a_keys_collections_become_a_prefilter() -> None:
    where = where_clause(SearchQuery(q="x", collections=["b", "a'"]))
    assert where == "collection IN ('a''', 'b')"
    # A table from before the column: its rows count as the default collection.
    assert where_clause(SearchQuery(q="x", collections=["default"]), ["caption"]) == "'default' IN ('default')"
    with pytest.raises(ValidationError):
        SearchQuery(q="x", collections=[])  # a scope of nothing is a bug, not "everything"


def test_token_shape() -> None:
    assert split_token(f"{TOKEN_PREFIX}0123456789abcdef_s3cr-et") == ("0123456789abcdef", "s3cr-et")
    for bad in ["", "Bearer x", f"{TOKEN_PREFIX}short_x", f"{TOKEN_PREFIX}0123456789abcdef_", "csk0123456789abcdef_x"]:
        assert split_token(bad) is None
