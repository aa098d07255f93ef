//! The command line as clap sees it: raw flags, not yet validated.
//!
//! Every flag that has a `BACKUP_*` twin is handed to [`crate::config`] under
//! that variable's name, so a flag, the environment and the project's `.env`
//! are resolved and validated by one piece of code with one precedence
//! (flag > environment > `.env` > default).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Automatic backups of an application's files and MongoDB database.
#[derive(Debug, Parser)]
#[command(
    name = "cofre",
    version,
    about = "Back up a project directory and its MongoDB database into one compressed, encrypted archive",
    long_about = "cofre backs up a project directory (and its MongoDB database when MONGODB_URI is set) \
into one archive: tar inside gzip or zstd inside age. Archives are standard formats: \
`age -d -i key.txt ARCHIVE | tar -xzf -` opens one without cofre.\n\n\
Configuration comes from flags, then the environment, then the project's .env file, \
then defaults. Run `cofre help <command>` for each command's options.",
    after_help = "Examples:\n  cofre backup                         back up the current directory into ./backups\n  \
cofre list                           show the archives, newest first\n  \
cofre restore latest --to /tmp/r     restore the newest archive into /tmp/r\n  \
cofre verify --all                   read every archive and check every hash\n  \
cofre daemon                         back up on BACKUP_SCHEDULE until stopped"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Project directory to back up [env: BACKUP_SOURCE] [default: current directory]
    #[arg(long, global = true, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Where archives live [env: BACKUP_DIR] [default: backups, inside the project]
    #[arg(long, global = true, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Also append log lines to this file [env: BACKUP_LOG_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Log format: text or json [env: BACKUP_LOG_FORMAT]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Print progress and informational lines even when stderr is not a terminal
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back up now, then apply the retention policy
    #[command(after_help = "Examples:\n  cofre backup\n  \
BACKUP_COMPRESSION=zstd cofre backup\n  \
cofre backup --recipient age1... --exclude '*.tmp'\n  \
cofre backup --mongo-uri mongodb://localhost/app")]
    Backup(BackupArgs),
    /// Restore an archive (files, database, or both) without harming the target
    #[command(
        after_help = "Examples:\n  cofre restore latest                      into ./backup_<time>\n  \
cofre restore backup_2026-11-27T00-00-00.tar.gz.age --to /srv/app --force\n  \
cofre restore latest --include 'public/**' --to /tmp/assets\n  \
cofre restore latest --mongo-only --drop\n  \
cofre restore --mongo-dir ./dump          a directory written by mongodump"
    )]
    Restore(RestoreArgs),
    /// List the archives in BACKUP_DIR, newest first
    List(ListArgs),
    /// Read archives fully and check every hash against the manifest
    #[command(
        after_help = "Examples:\n  cofre verify                  the newest archive\n  \
cofre verify backup_2026-11-27T00-00-00.tar.gz.age\n  cofre verify --all"
    )]
    Verify(VerifyArgs),
    /// Apply the retention policy now and say why each archive is kept or deleted
    Prune(PruneArgs),
    /// Run backups on BACKUP_SCHEDULE until SIGTERM or SIGINT
    Daemon(DaemonArgs),
    /// Last success, last failure, next run, archives and free space
    #[command(after_help = "Examples:\n  cofre status\n  \
cofre status --max-age 26h     exit 1 when the last good backup is older (for health checks)")]
    Status(StatusArgs),
    /// Make an age identity (a key pair) for public-key encryption
    #[command(
        after_help = "Examples:\n  cofre keygen -o key.txt       keep key.txt off the server; \
put the printed public key in BACKUP_RECIPIENTS"
    )]
    Keygen(KeygenArgs),
}

/// Options that shape what goes into an archive.
#[derive(Debug, Args, Default)]
pub struct ArchiveOptions {
    /// gzip or zstd, optionally with a level: gzip:1..9, zstd:1..19 [env: BACKUP_COMPRESSION]
    #[arg(long, value_name = "ALGO[:LEVEL]")]
    pub compression: Option<String>,
    /// age or none [env: BACKUP_ENCRYPTION]
    #[arg(long, value_name = "MODE")]
    pub encryption: Option<String>,
    /// age public key to encrypt to; repeat for several [env: BACKUP_RECIPIENTS]
    #[arg(long = "recipient", value_name = "AGE1...")]
    pub recipients: Vec<String>,
    /// File of age public keys, one per line [env: BACKUP_RECIPIENTS_FILE]
    #[arg(long, value_name = "FILE")]
    pub recipients_file: Option<PathBuf>,
    /// File holding the passphrase [env: BACKUP_PASSPHRASE_FILE]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Extra gitignore-style pattern to leave out; repeat for several [env: BACKUP_EXCLUDE]
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
}

/// `cofre backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub archive: ArchiveOptions,
    #[command(flatten)]
    pub mongo: MongoSelect,
    #[command(flatten)]
    pub lock: LockArgs,
    /// Do not apply the retention policy after the backup
    #[arg(long)]
    pub no_prune: bool,
}

/// Which MongoDB server and databases to dump.
#[derive(Debug, Args, Default)]
pub struct MongoSelect {
    /// MongoDB connection string [env: BACKUP_MONGODB_URI, MONGODB_URI]
    #[arg(long, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// Dump only this database; repeat for several [env: BACKUP_MONGODB_DATABASES]
    #[arg(long = "db", value_name = "NAME")]
    pub databases: Vec<String>,
    /// Dump only this collection (DB.COLLECTION or COLLECTION); repeat for several
    #[arg(long = "collection", value_name = "NAME")]
    pub collections: Vec<String>,
}

/// How long to wait for another cofre process to release the lock.
#[derive(Debug, Args, Default)]
pub struct LockArgs {
    /// Wait up to this long for another cofre process (e.g. 30s, 5m); default: fail at once
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

/// Keys for reading an archive.
#[derive(Debug, Args, Default)]
pub struct KeyArgs {
    /// age identity file to decrypt with; repeat for several [env: BACKUP_IDENTITY_FILE]
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// File holding the passphrase [env: BACKUP_PASSPHRASE_FILE]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `cofre restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Archive path, or a name in BACKUP_DIR, or `latest`
    #[arg(value_name = "ARCHIVE", required_unless_present = "mongo_dir")]
    pub archive: Option<String>,
    /// Directory to restore files into [default: ./<archive name without extensions>]
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Restore into a non-empty directory, replacing files the archive holds
    #[arg(long)]
    pub force: bool,
    /// Read and verify the archive, print what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Restore only paths matching this gitignore-style pattern; repeat for several
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Restore only the project files
    #[arg(long, conflicts_with = "mongo_only")]
    pub files_only: bool,
    /// Restore only the database
    #[arg(long)]
    pub mongo_only: bool,
    /// Restore symlinks that point outside the target as they are (they are never followed)
    #[arg(long)]
    pub allow_outside_symlinks: bool,
    /// Restore an archive that is not signed by a trusted key (with a warning)
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Give restored files the owners recorded in the archive (as root; as GNU tar's --same-owner)
    #[arg(long)]
    pub same_owner: bool,
    /// Keep setuid and setgid bits (as GNU tar's --same-permissions); by default they are dropped
    #[arg(long)]
    pub same_permissions: bool,
    /// MongoDB server to restore into [default: BACKUP_MONGODB_URI / MONGODB_URI]
    #[arg(long, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// Restore every collection into this database instead of its own
    #[arg(long, value_name = "NAME")]
    pub to_db: Option<String>,
    /// Drop collections that already exist before restoring them
    #[arg(long)]
    pub drop: bool,
    /// Restore a plain dump directory written by mongodump instead of an archive
    #[arg(long, value_name = "DIR", conflicts_with_all = ["archive", "files_only", "to", "includes"])]
    pub mongo_dir: Option<PathBuf>,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `cofre list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

/// `cofre verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Archive path, or a name in BACKUP_DIR, or `latest` [default: latest]
    #[arg(value_name = "ARCHIVE", conflicts_with = "all")]
    pub archive: Option<String>,
    /// Verify every archive in BACKUP_DIR
    #[arg(long)]
    pub all: bool,
    /// Check the contents of an archive that is not signed by a trusted key (it is reported as unsigned)
    #[arg(long)]
    pub allow_unsigned: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// `cofre prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the decisions, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `cofre daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub archive: ArchiveOptions,
    #[command(flatten)]
    pub mongo: MongoSelect,
    /// Cron expression (5 fields, or 6 with seconds) [env: BACKUP_SCHEDULE]
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
}

/// `cofre status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the last successful backup is older than this (e.g. 26h), or there is none
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
}

/// `cofre keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to this file (mode 0600) instead of stdout; never overwrites
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
