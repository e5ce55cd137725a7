-- jobs.sql — scheduled work (pg_cron): retention now, reconciliation as the
-- services land.  Services add rows to isa.scheduled_jobs; isa.schedule_jobs()
-- hands them all to pg_cron, idempotently by job name.

CREATE FUNCTION isa.retention(target text) RETURNS interval
    AS 'MODULE_PATHNAME', 'isa_retention' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION isa.retention(text) IS
    'The retention period in force for outbox, inbox or cron_history (GUCs isa.outbox_retention, isa.inbox_retention, isa.cron_history_retention).';

CREATE FUNCTION isa.purge_retention() RETURNS TABLE (target text, deleted bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM isa.outbox o WHERE o.published_at < now() - isa.retention('outbox');
    GET DIAGNOSTICS n = ROW_COUNT;
    target := 'isa.outbox'; deleted := n; RETURN NEXT;

    DELETE FROM isa.inbox i WHERE i.processed_at < now() - isa.retention('inbox');
    GET DIAGNOSTICS n = ROW_COUNT;
    target := 'isa.inbox'; deleted := n; RETURN NEXT;

    IF to_regclass('cron.job_run_details') IS NOT NULL THEN
        EXECUTE 'DELETE FROM cron.job_run_details WHERE end_time < now() - $1'
            USING isa.retention('cron_history');
        GET DIAGNOSTICS n = ROW_COUNT;
        target := 'cron.job_run_details'; deleted := n; RETURN NEXT;
    END IF;
END
$$;
COMMENT ON FUNCTION isa.purge_retention() IS
    'Deletes published outbox rows, inbox rows and cron.job_run_details older than their retention; returns what it deleted.';

CREATE TABLE isa.scheduled_jobs (
    jobname     text PRIMARY KEY CHECK (jobname ~ '^isa-[a-z0-9-]+$'),
    schedule    text NOT NULL,
    command     text NOT NULL,
    description text NOT NULL
);
COMMENT ON TABLE isa.scheduled_jobs IS
    'The pg_cron jobs isa wants; isa.schedule_jobs() registers them.';

INSERT INTO isa.scheduled_jobs VALUES
    ('isa-retention', '17 * * * *', 'SELECT isa.purge_retention()',
     'Hourly: delete published outbox rows, inbox rows and cron.job_run_details past their retention.');

CREATE FUNCTION isa.schedule_jobs() RETURNS TABLE (jobname text, schedule text, jobid bigint)
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j isa.scheduled_jobs;
BEGIN
    IF to_regprocedure('cron.schedule(text,text,text)') IS NULL THEN
        RAISE NOTICE 'pg_cron is not installed in database "%": isa''s jobs are not scheduled', current_database()
            USING HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, '
                         'run CREATE EXTENSION pg_cron, then SELECT isa.schedule_jobs() again.';
        RETURN;
    END IF;
    FOR j IN SELECT * FROM isa.scheduled_jobs sj ORDER BY sj.jobname LOOP
        -- cron.schedule with a job name updates the job of that name: idempotent.
        EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO jobid USING j.jobname, j.schedule, j.command;
        jobname := j.jobname; schedule := j.schedule;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION isa.schedule_jobs() IS
    'Registers every job of isa.scheduled_jobs with pg_cron (idempotent, by job name); a notice and no rows when pg_cron is absent.';

CREATE FUNCTION isa._jobs() RETURNS TABLE (
    jobname text, schedule text, command text, description text,
    jobid bigint, active boolean, last_status text, last_start timestamptz, last_end timestamptz)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF to_regclass('cron.job') IS NULL THEN
        RETURN QUERY SELECT sj.jobname, sj.schedule, sj.command, sj.description,
                            NULL::bigint, NULL::boolean, NULL::text, NULL::timestamptz, NULL::timestamptz
                       FROM isa.scheduled_jobs sj ORDER BY sj.jobname;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT sj.jobname, coalesce(j.schedule, sj.schedule), coalesce(j.command, sj.command), sj.description,
               j.jobid, j.active, r.status, r.start_time, r.end_time
          FROM isa.scheduled_jobs sj
          LEFT JOIN cron.job j ON j.jobname = sj.jobname
          LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time FROM cron.job_run_details d
                              WHERE d.jobid = j.jobid ORDER BY d.runid DESC LIMIT 1) r ON true
         ORDER BY sj.jobname $q$;
END
$$;

CREATE VIEW isa.jobs AS SELECT * FROM isa._jobs();
COMMENT ON VIEW isa.jobs IS
    'isa''s scheduled jobs: what isa.scheduled_jobs wants, the pg_cron job (jobid NULL if not scheduled) and its last run.';
