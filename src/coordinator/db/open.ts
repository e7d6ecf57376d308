import Database from 'better-sqlite3';
import { MIGRATIONS } from './migrations.js';

export type Db = Database.Database;

/**
 * Open (creating if needed) the coordinator database with the settings it
 * relies on, and bring its schema up to date.
 */
export function openDatabase(path: string, migrations: readonly string[] = MIGRATIONS): Db {
  const db = new Database(path);
  try {
    // Refuse a newer database before any pragma that writes to the file.
    const current = schemaVersion(db);
    if (current > migrations.length) {
      throw new Error(`database schema version ${current} is newer than this coordinator (${migrations.length}); refusing to run`);
    }
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    // Every change runs in a savepoint, whose journal (and each statement's) is a
    // temp file by default: a file write per statement. They only ever roll back
    // inside the open transaction, never across a crash, so memory is enough.
    db.pragma('temp_store = MEMORY');
    migrate(db, migrations);
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

export function schemaVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/** Apply every migration past PRAGMA user_version, each in its own transaction. */
export function migrate(db: Db, migrations: readonly string[] = MIGRATIONS): void {
  const current = schemaVersion(db);
  if (current > migrations.length) {
    throw new Error(`database schema version ${current} is newer than this coordinator (${migrations.length}); refusing to run`);
  }
  for (let v = current; v < migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}
