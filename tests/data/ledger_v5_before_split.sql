-- A ledger written by rfmsync before the sync/ledger/ split (commit 2944ac4, schema version 5), dumped with
-- sqlite3 iterdump: one partial sync run, two pushed states, a pending failure, a cursor, a lock held by
-- another host, one processing and one queued webhook event. tests/test_ledger_compat.py reopens it.
BEGIN TRANSACTION;
CREATE TABLE cursors (
	source VARCHAR(200) NOT NULL,
	obj VARCHAR(200) NOT NULL,
	value TEXT NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (source, obj)
);
INSERT INTO "cursors" VALUES('shopify','all','2025-03-01T11:00:00+00:00','2025-03-01 12:00:00.000000');
CREATE TABLE events (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	source VARCHAR(200) NOT NULL,
	dedupe_key VARCHAR(500) NOT NULL,
	payload TEXT NOT NULL,
	status VARCHAR(20) NOT NULL,
	received_at DATETIME NOT NULL,
	attempts INTEGER NOT NULL,
	locked_by VARCHAR(200),
	locked_at DATETIME,
	finished_at DATETIME,
	last_error TEXT,
	CONSTRAINT uq_events_source_dedupe UNIQUE (source, dedupe_key)
);
INSERT INTO "events" VALUES(1,'generic','order:1','{"orders":[],"contacts":[]}','processing','2025-03-01 12:00:00.000000',1,'otherhost:99:w1','2025-03-01 12:00:00.000000',NULL,NULL);
INSERT INTO "events" VALUES(2,'generic','order:2','{"orders":[],"contacts":[],"pull":true}','queued','2025-03-01 12:00:00.000000',0,NULL,NULL,NULL,NULL);
CREATE TABLE failures (
	destination VARCHAR(200) NOT NULL,
	"key" VARCHAR(320) NOT NULL,
	op VARCHAR(300) NOT NULL,
	attempts INTEGER NOT NULL,
	last_error TEXT,
	first_failed_at DATETIME NOT NULL,
	last_failed_at DATETIME NOT NULL,
	run_id INTEGER,
	PRIMARY KEY (destination, "key", op),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE SET NULL
);
INSERT INTO "failures" VALUES('mailchimp-main','eve@example.com','tag:add',1,'400 Invalid Resource','2025-03-01 12:00:00.000000','2025-03-01 12:00:00.000000',1);
CREATE TABLE locks (
	name VARCHAR(200) NOT NULL,
	owner VARCHAR(200) NOT NULL,
	acquired_at DATETIME NOT NULL,
	expires_at DATETIME NOT NULL,
	PRIMARY KEY (name)
);
INSERT INTO "locks" VALUES('schedule','otherhost:1234:abcd','2025-03-01 12:00:00.000000','2025-03-01 13:00:00.000000');
CREATE TABLE pushed_state (
	destination VARCHAR(200) NOT NULL,
	"key" VARCHAR(320) NOT NULL,
	customer_id VARCHAR(200),
	tags TEXT NOT NULL,
	fields TEXT NOT NULL,
	in_destination BOOLEAN NOT NULL,
	pushed_at DATETIME NOT NULL,
	run_id INTEGER,
	PRIMARY KEY (destination, "key"),
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE SET NULL
);
INSERT INTO "pushed_state" VALUES('mailchimp-main','ann@example.com','c1','["VIP","rfm:Best active"]','{"AOV":"42.50","RFM_SCORE":555}',1,'2025-03-01 12:00:00',1);
INSERT INTO "pushed_state" VALUES('mailchimp-main','bob@example.com','c2','[]','{"CHURN":0.25}',0,'2025-03-01 12:00:00',1);
CREATE TABLE runs (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	kind VARCHAR(50) NOT NULL,
	destination VARCHAR(200),
	status VARCHAR(20) NOT NULL,
	started_at DATETIME NOT NULL,
	finished_at DATETIME,
	counts TEXT NOT NULL,
	error TEXT
, owner VARCHAR(200));
INSERT INTO "runs" VALUES(1,'sync','mailchimp-main','partial','2025-03-01 12:00:00.000000','2025-03-01 12:00:00.000000','{"customers": 3, "failed": 1}','1 item failed','vm:17087:run');
CREATE TABLE schema_version (
	version INTEGER NOT NULL,
	description VARCHAR(200) NOT NULL,
	applied_at DATETIME NOT NULL,
	PRIMARY KEY (version)
);
INSERT INTO "schema_version" VALUES(1,'runs, pushed_state, cursors, locks','2025-03-01 12:00:00.000000');
INSERT INTO "schema_version" VALUES(2,'failures, state_revisions','2025-03-01 12:00:00.000000');
INSERT INTO "schema_version" VALUES(3,'events (webhook queue)','2025-03-01 12:00:00.000000');
INSERT INTO "schema_version" VALUES(4,'runs.owner','2025-03-01 12:00:00.000000');
INSERT INTO "schema_version" VALUES(5,'index on runs.status','2025-03-01 12:00:00.000000');
CREATE TABLE state_revisions (
	destination VARCHAR(200) NOT NULL,
	revision INTEGER NOT NULL,
	PRIMARY KEY (destination)
);
INSERT INTO "state_revisions" VALUES('mailchimp-main',1);
CREATE INDEX ix_events_status_id ON events (status, id);
CREATE INDEX ix_runs_status ON runs (status);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('runs',1);
INSERT INTO "sqlite_sequence" VALUES('events',2);
COMMIT;
