"""Attempts per hour, job class, status and error code, kept by triggers on job_log: the panel's
counts read a few thousand rows instead of every attempt of the week.

PostgreSQL: statement triggers append each statement's change to job_log_hour_deltas (inserts
only, so concurrent writers never wait on one counter row); db.job_log_hours.fold() moves them
into job_log_hours. SQLite has one writer at a time: row triggers count into job_log_hours.
"""
from peewee import BigIntegerField, CharField, CompositeKey, DateTimeField, DoubleField, Model, PostgresqlDatabase

# a transition table's rows as counts: +1 for rows a statement added, -1 for those it removed
_ROWS = """SELECT date_trunc('hour', created_at) AS hour, job_class, status, coalesce(error_code, '') AS error_code,
               {sign} AS attempts, {sign} * (duration_seconds IS NOT NULL)::int AS timed,
               {sign} * coalesce(duration_seconds, 0)::double precision AS seconds
        FROM {table}"""

_FUNCTION = """
CREATE OR REPLACE FUNCTION job_log_hours_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_log_hour_deltas (hour, job_class, status, error_code, attempts, timed, seconds)
    SELECT hour, job_class, status, error_code, sum(attempts), sum(timed), sum(seconds)
    FROM ({rows}) AS changes
    GROUP BY hour, job_class, status, error_code
    HAVING sum(attempts) <> 0 OR sum(timed) <> 0 OR sum(seconds) <> 0;
    RETURN NULL;
END $$;
"""

ADDED, REMOVED = _ROWS.format(sign=1, table="added"), _ROWS.format(sign=-1, table="removed")
POSTGRES = (
    _FUNCTION.format(name="added", rows=ADDED)
    + _FUNCTION.format(name="changed", rows=f"{ADDED} UNION ALL {REMOVED}")
    + _FUNCTION.format(name="removed", rows=REMOVED)
    + """
CREATE OR REPLACE FUNCTION job_log_hours_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_log_hours;
    DELETE FROM job_log_hour_deltas;
    RETURN NULL;
END $$;

CREATE TRIGGER job_log_hours_insert AFTER INSERT ON job_log REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION job_log_hours_added();
CREATE TRIGGER job_log_hours_update AFTER UPDATE ON job_log REFERENCING OLD TABLE AS removed NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION job_log_hours_changed();
CREATE TRIGGER job_log_hours_delete AFTER DELETE ON job_log REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION job_log_hours_removed();
CREATE TRIGGER job_log_hours_truncate AFTER TRUNCATE ON job_log
    FOR EACH STATEMENT EXECUTE FUNCTION job_log_hours_clear();

INSERT INTO job_log_hours (hour, job_class, status, error_code, attempts, timed, seconds)
SELECT date_trunc('hour', created_at), job_class, status, coalesce(error_code, ''),
       count(*), count(duration_seconds), coalesce(sum(duration_seconds::double precision), 0)
FROM job_log GROUP BY 1, 2, 3, 4;
""")

# SQLite stores times as 'YYYY-MM-DD HH:MM:SS[.ffffff]': the hour is the first 13 characters
_COUNT = """INSERT INTO job_log_hours (hour, job_class, status, error_code, attempts, timed, seconds)
    VALUES (substr({row}.created_at, 1, 13) || ':00:00', {row}.job_class, {row}.status, coalesce({row}.error_code, ''),
            {sign}, {sign} * ({row}.duration_seconds IS NOT NULL), {sign} * coalesce({row}.duration_seconds, 0))
    ON CONFLICT (hour, job_class, status, error_code) DO UPDATE SET attempts = attempts + excluded.attempts,
        timed = timed + excluded.timed, seconds = seconds + excluded.seconds;"""
ADD, REMOVE = _COUNT.format(row="NEW", sign=1), _COUNT.format(row="OLD", sign=-1)
SQLITE = [
    f"CREATE TRIGGER job_log_hours_insert AFTER INSERT ON job_log BEGIN {ADD} END",
    "CREATE TRIGGER job_log_hours_update AFTER UPDATE OF created_at, job_class, status, error_code, duration_seconds"
    f" ON job_log BEGIN {REMOVE} {ADD} END",
    f"CREATE TRIGGER job_log_hours_delete AFTER DELETE ON job_log BEGIN {REMOVE} END",
    """INSERT INTO job_log_hours (hour, job_class, status, error_code, attempts, timed, seconds)
    SELECT substr(created_at, 1, 13) || ':00:00', job_class, status, coalesce(error_code, ''),
           count(*), count(duration_seconds), coalesce(sum(duration_seconds), 0)
    FROM job_log WHERE true GROUP BY 1, 2, 3, 4""",
]


def up(db, migrator):
    class Counts(Model):
        hour = DateTimeField()
        job_class = CharField()
        status = CharField()
        error_code = CharField(default="")  # '' for none: part of the key, and NULLs are never equal
        attempts = BigIntegerField()
        timed = BigIntegerField()  # attempts with a duration
        seconds = DoubleField()  # their durations' sum

    class JobLogHour(Counts):
        class Meta:
            database = db
            table_name = "job_log_hours"
            primary_key = CompositeKey("hour", "job_class", "status", "error_code")

    class JobLogHourDelta(Counts):
        class Meta:
            database = db
            table_name = "job_log_hour_deltas"
            primary_key = False

    if isinstance(db, PostgresqlDatabase):
        db.create_tables([JobLogHour, JobLogHourDelta])
        db.execute_sql(POSTGRES)
    else:
        db.create_tables([JobLogHour])
        for statement in SQLITE:
            db.execute_sql(statement)
