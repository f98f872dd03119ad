"""Spider hardness levels agree with the official evaluator's ``Evaluator.eval_hardness``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from tooling import require_shared

from coderag.evaluation.hardness import LEVELS, UNKNOWN, HardnessCounts, hardness, hardness_counts, level_from_counts

SPIDER_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "spider"

# Spider dev gold queries (and two from the official repo's evaluation_examples/gold.txt, with "! =") with
# the level the official evaluator gives them (test-suite-sql-eval's evaluation.py, run on each database).
OFFICIAL = [
    ("SELECT count(DISTINCT LOCATION) FROM shop", "easy"),
    ('SELECT COUNT(*) FROM (SELECT T1.Name FROM country AS T1 JOIN countrylanguage AS T2 ON T1.Code  =  T2.CountryCode WHERE T2.Language  =  "English" INTERSECT SELECT T1.Name FROM country AS T1 JOIN countrylanguage AS T2 ON T1.Code  =  T2.CountryCode WHERE T2.Language  =  "Dutch")', "easy"),
    ("SELECT document_id FROM Paragraphs GROUP BY document_id HAVING count(*) BETWEEN 1 AND 2", "easy"),
    ('SELECT Code FROM country WHERE GovernmentForm ! =  "Republic"', "easy"),
    ("SELECT city FROM employee WHERE age  <  30 GROUP BY city HAVING count(*)  >  1", "medium"),
    ("SELECT name ,  country FROM singer WHERE song_name LIKE '%Hey%'", "medium"),
    ("SELECT count(*) FROM concert WHERE YEAR  =  2014 OR YEAR  =  2015", "medium"),
    ("SELECT song_name ,  song_release_year FROM singer ORDER BY age LIMIT 1", "medium"),
    ("SELECT T2.name ,  count(*) FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id  =  T2.stadium_id GROUP BY T1.stadium_id", "medium"),
    ("SELECT LOCATION ,  name FROM stadium WHERE capacity BETWEEN 5000 AND 10000", "medium"),
    ("SELECT Major_Record_Format FROM orchestra GROUP BY Major_Record_Format ORDER BY COUNT(*) ASC", "medium"),
    ("SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)", "hard"),
    ("SELECT country FROM singer WHERE age  >  40 INTERSECT SELECT country FROM singer WHERE age  <  30", "hard"),
    ("SELECT name FROM stadium EXCEPT SELECT T2.name FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id  =  T2.stadium_id WHERE T1.year  =  2014", "hard"),
    ("SELECT song_name FROM singer WHERE age  >  (SELECT avg(age) FROM singer)", "hard"),
    ("SELECT YEAR FROM concert GROUP BY YEAR ORDER BY count(*) DESC LIMIT 1", "hard"),
    ('SELECT Code FROM country WHERE GovernmentForm ! =  "Republic" EXCEPT SELECT CountryCode FROM countrylanguage WHERE LANGUAGE  =  "English"', "hard"),
    ("SELECT T2.name ,  T2.capacity FROM concert AS T1 JOIN stadium AS T2 ON T1.stadium_id  =  T2.stadium_id WHERE T1.year  >=  2014 GROUP BY T2.stadium_id ORDER BY count(*) DESC LIMIT 1", "extra"),
    ('select t1.name from country as t1 join countrylanguage as t2 on t1.code  =  t2.countrycode where t2.language  =  "english" and isofficial  =  "t" union select t1.name from country as t1 join countrylanguage as t2 on t1.code  =  t2.countrycode where t2.language  =  "dutch" and isofficial  =  "t"', "extra"),
    ('SELECT avg(LifeExpectancy) FROM country WHERE Name NOT IN (SELECT T1.Name FROM country AS T1 JOIN countrylanguage AS T2 ON T1.Code  =  T2.CountryCode WHERE T2.Language  =  "English" AND T2.IsOfficial  =  "T")', "extra"),
    ('SELECT Name FROM country WHERE Continent  =  "Africa"  AND population  <  (SELECT max(population) FROM country WHERE Continent  =  "Asia")', "extra"),
    ('SELECT count(*) ,   max(Percentage) FROM countrylanguage WHERE LANGUAGE  =  "Spanish" GROUP BY CountryCode', "extra"),
]

# Levels the official evaluator gives the 493 questions of ../shared/datasets/spider/dev.json.
OFFICIAL_DEV_LEVELS = {"easy": 124, "medium": 226, "hard": 87, "extra": 56}


@pytest.mark.parametrize(("sql", "expected"), OFFICIAL, ids=[f"{i:02d}-{level}" for i, (_, level) in enumerate(OFFICIAL)])
def test_level_agrees_with_the_official_evaluator(sql, expected):
    assert hardness(sql) == expected


def test_the_fixed_pairs_agree_as_a_whole():
    agreed = sum(hardness(sql) == expected for sql, expected in OFFICIAL)
    assert agreed == len(OFFICIAL) >= 20
    assert {expected for _, expected in OFFICIAL} == set(LEVELS)


def test_counts_follow_the_official_components():
    # Every expected count below is what the official count_component1 / count_component2 / count_others gave.
    # WHERE + ORDER BY + LIMIT + one join + one OR + one LIKE = 6; one nested value; 2 select items + 2 conditions.
    counts = hardness_counts("SELECT T1.a, T2.b FROM t AS T1 JOIN s AS T2 ON T1.id = T2.id "
                             "WHERE T1.c LIKE 'x%' OR T1.d IN (SELECT d FROM u) ORDER BY T1.a LIMIT 3")
    assert counts == HardnessCounts(component1=6, component2=1, others=2)
    # A FROM subquery is a table unit (no join alone), not a nested query; set operations count once.
    assert hardness_counts("SELECT count(*) FROM (SELECT a FROM t)") == HardnessCounts(0, 0, 0)
    assert hardness_counts("SELECT a FROM t UNION SELECT a FROM s UNION SELECT a FROM u ORDER BY a") == HardnessCounts(0, 1, 0)
    # The official aggregate count also counts NOT conditions and HAVING's AND / OR.
    assert hardness_counts("SELECT a FROM t GROUP BY a HAVING count(*) > 1 AND sum(b) > 2") == HardnessCounts(1, 0, 0)
    assert hardness_counts("SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1 AND sum(b) > 2") == HardnessCounts(1, 0, 2)
    assert hardness_counts("SELECT max(a) FROM t WHERE b NOT LIKE 'x'") == HardnessCounts(2, 0, 1)
    assert hardness_counts("SELECT max(a) FROM t WHERE b NOT IN (SELECT a FROM u)") == HardnessCounts(1, 1, 1)


def test_thresholds():
    assert level_from_counts(HardnessCounts(1, 0, 0)) == "easy"
    assert level_from_counts(HardnessCounts(2, 0, 1)) == "medium"
    assert level_from_counts(HardnessCounts(1, 0, 2)) == "medium"
    assert level_from_counts(HardnessCounts(3, 0, 2)) == "hard"
    assert level_from_counts(HardnessCounts(1, 1, 0)) == "hard"
    assert level_from_counts(HardnessCounts(2, 0, 3)) == "hard"
    assert level_from_counts(HardnessCounts(4, 0, 0)) == "extra"
    assert level_from_counts(HardnessCounts(1, 1, 1)) == "extra"


@pytest.mark.parametrize("sql", ["", "SELEC name FRM singer", "INSERT INTO t VALUES (1)", "SELECT 1; SELECT 2"])
def test_sql_that_is_not_one_query_is_unknown(sql):
    assert hardness(sql) == UNKNOWN
    assert hardness_counts(sql) is None


def test_spider_dev_levels_match_the_official_distribution():
    require_shared("datasets/spider", "dev.json")
    dev = json.loads((SPIDER_DIR / "dev.json").read_text(encoding="utf-8"))
    assert len(dev) == sum(OFFICIAL_DEV_LEVELS.values())
    assert Counter(hardness(q["query"]) for q in dev) == OFFICIAL_DEV_LEVELS
