-- A read-only PostgreSQL role for Grafana that sees ONE tenant of the sensorlake hot store.
--
--   psql -v ON_ERROR_STOP=1 -v tenant=default -v role=grafana_default \
--        -v password='choose-one' -v store_schema=public -f postgres-readonly.sql
--
-- The role gets a schema of its own (named like the role) holding views of the store's
-- `readings` and `latest` tables filtered to the tenant (security barrier views owned by
-- the caller), no privilege on the store's tables themselves, read-only transactions and a
-- statement timeout. Grafana queries `readings` / `latest` unqualified (search_path).
-- Run it again with another tenant and role for each tenant. Remove with:
--   DROP SCHEMA grafana_default CASCADE; DROP ROLE grafana_default;

CREATE ROLE :"role" LOGIN PASSWORD :'password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT CONNECTION LIMIT 10;
ALTER ROLE :"role" SET default_transaction_read_only = on;
ALTER ROLE :"role" SET statement_timeout = '30s';

CREATE SCHEMA :"role";
REVOKE ALL ON SCHEMA :"role" FROM PUBLIC;

CREATE VIEW :"role".readings WITH (security_barrier) AS
  SELECT device_id, metric, ts, value, quality, lat, lon
  FROM :"store_schema".readings WHERE tenant = :'tenant';

CREATE VIEW :"role".latest WITH (security_barrier) AS
  SELECT device_id, metric, ts, value, lat, lon
  FROM :"store_schema".latest WHERE tenant = :'tenant';

REVOKE ALL ON ALL TABLES IN SCHEMA :"store_schema" FROM :"role";
GRANT USAGE ON SCHEMA :"role" TO :"role";
GRANT SELECT ON :"role".readings, :"role".latest TO :"role";
ALTER ROLE :"role" SET search_path = :"role";
