-- 0.1.0 → 0.2.0, core: a service is named after its schema ('authorization'
-- is now 'authz', 'order' is 'orders'), in isa.services, subscriptions, dead
-- letters and inbox rows.  The NATS sources (authorization_service,
-- order_service) are a published contract and do not change.
--
-- A subscription keeps its durable_name: it names the JetStream consumer and
-- keys the inbox rows of the events it applied, so renaming it would start a
-- new consumer at the beginning of the stream and apply again whatever the
-- inbox retention has already forgotten.  A fresh install derives the name
-- from the new service name; only the name differs (the upgrade test leaves
-- durable_name out of the comparison for that reason).
ALTER TABLE isa.subscriptions DROP CONSTRAINT subscriptions_service_fkey;
ALTER TABLE isa.dead_letters DROP CONSTRAINT dead_letters_service_fkey;
ALTER TABLE isa.inbox DETACH PARTITION authz.inbox;
ALTER TABLE isa.inbox DETACH PARTITION orders.inbox;

UPDATE isa.services s SET name = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE s.name = r.old;
UPDATE isa.subscriptions s SET service = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE s.service = r.old;
UPDATE isa.dead_letters d SET service = r.new
  FROM (VALUES ('authorization', 'authz'), ('order', 'orders')) AS r (old, new)
 WHERE d.service = r.old;
UPDATE authz.inbox SET service = 'authz';
UPDATE orders.inbox SET service = 'orders';

ALTER TABLE isa.inbox ATTACH PARTITION authz.inbox FOR VALUES IN ('authz');
ALTER TABLE isa.inbox ATTACH PARTITION orders.inbox FOR VALUES IN ('orders');
ALTER TABLE isa.subscriptions ADD CONSTRAINT subscriptions_service_fkey
    FOREIGN KEY (service) REFERENCES isa.services (name);
ALTER TABLE isa.dead_letters ADD CONSTRAINT dead_letters_service_fkey
    FOREIGN KEY (service) REFERENCES isa.services (name);


-- A consumer applies an event only on its own subject, <source>.<event_type>;
-- any other is dead-lettered with reason subject_mismatch.
ALTER TABLE isa.dead_letters DROP CONSTRAINT dead_letters_reason_check;
ALTER TABLE isa.dead_letters ADD CONSTRAINT dead_letters_reason_check
    CHECK (reason IN ('handler_error', 'invalid_envelope', 'unsupported_version', 'subject_mismatch'));
UPDATE isa.event_types
   SET data_fields = jsonb_set(data_fields, '{reason,description}',
                               '"handler_error, invalid_envelope, subject_mismatch or unsupported_version"')
 WHERE event_type = 'event.dead_lettered';
