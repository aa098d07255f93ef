//! The command line as clap sees it: raw flags, not yet validated.
//!
//! Every flag that stands for a setting takes its name, placeholder and help
//! from `crate::vars`, and is handed to `crate::config` as that setting,
//! so a flag, the environment and the project's `.env` are resolved and
//! validated by one piece of code with one precedence (flag > environment >
//! `.env` > default).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::vars;

/// Automatic backups of an application's files and MongoDB database.
#[derive(Debug, Parser)]
#[command(
    name = "cofre",
    version,
    after_long_help = vars::environment_help(),
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
cofre drill                          prove the newest archive restores, database included\n  \
cofre daemon                         back up on BACKUP_SCHEDULE until stopped"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts (shown apart in each command's help).
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    #[arg(long = vars::SOURCE.flag, global = true, value_name = vars::SOURCE.value_name, help = vars::SOURCE.help_text())]
    pub source: Option<PathBuf>,
    #[arg(long = vars::DIR.flag, global = true, value_name = vars::DIR.value_name, help = vars::DIR.help_text())]
    pub backup_dir: Option<PathBuf>,
    #[arg(long = vars::LOG_FILE.flag, global = true, value_name = vars::LOG_FILE.value_name, help = vars::LOG_FILE.help_text())]
    pub log_file: Option<PathBuf>,
    #[arg(long = vars::LOG_FORMAT.flag, global = true, value_name = vars::LOG_FORMAT.value_name, help = vars::LOG_FORMAT.help_text())]
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
cofre restore --at 2026-12-03T14:32:05Z --mongo-only --db-prefix pitr_\n  \
cofre restore --before-op 1796313536,23 --mongo-only --drop   just before an operation `cofre oplog` found\n  \
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
    /// Prove an archive restores: files and database into scratch, compared, smoke-tested, removed
    #[command(
        after_help = "Examples:\n  cofre drill                   the newest archive\n  \
cofre drill --remote          the newest copy in the bucket\n  \
BACKUP_DRILL_COMMAND='node scripts/smoke.js' cofre drill\n  \
cofre status --max-drill-age 8d     exit 1 when the last good drill is older (or the last failed)"
    )]
    Drill(DrillArgs),
    /// List the captured oplog's operations (time, op, namespace, _id), to find a restore point
    #[command(after_help = "Examples:\n  \
cofre oplog --since 2026-12-03T14:30:00Z --until 2026-12-03T14:35:00Z --ns app.users\n  \
cofre oplog --op c                       every command (drop, rename, index...)\n  \
cofre restore --before-op T,I --mongo-only --db-prefix pitr_   then restore to just before one")]
    Oplog(OplogArgs),
    /// Upload to BACKUP_REMOTE every archive it lacks, then apply remote retention
    #[command(
        after_help = "Examples:\n  cofre upload          catch up after an outage (backup and the daemon do this on their own)"
    )]
    Upload(UploadArgs),
    /// Make an age identity (a key pair) for public-key encryption
    #[command(
        after_help = "Examples:\n  cofre keygen -o key.txt       keep key.txt off the server; \
put the printed public key in BACKUP_RECIPIENTS"
    )]
    Keygen(KeygenArgs),
    /// Print shell completions for bash, zsh or fish
    #[command(after_help = "Examples:\n  \
cofre completions bash > /etc/bash_completion.d/cofre\n  \
cofre completions zsh > \"${fpath[1]}/_cofre\"\n  \
cofre completions fish > ~/.config/fish/completions/cofre.fish")]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), for man(1)
    #[command(
        after_help = "Examples:\n  cofre man > /usr/local/share/man/man1/cofre.1 && man cofre"
    )]
    Man(ManArgs),
}

/// `cofre completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells completions are made for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash
    Bash,
    /// Z shell
    Zsh,
    /// fish
    Fish,
}

/// `cofre man`.
#[derive(Debug, Args)]
pub struct ManArgs {}

/// Options that shape what goes into an archive.
#[derive(Debug, Args, Default)]
pub struct ArchiveOptions {
    #[arg(long = vars::COMPRESSION.flag, value_name = vars::COMPRESSION.value_name, help = vars::COMPRESSION.help_text())]
    pub compression: Option<String>,
    #[arg(long = vars::ENCRYPTION.flag, value_name = vars::ENCRYPTION.value_name, help = vars::ENCRYPTION.help_text())]
    pub encryption: Option<String>,
    #[arg(long = vars::RECIPIENTS.flag, value_name = vars::RECIPIENTS.value_name, help = vars::RECIPIENTS.help_text())]
    pub recipients: Vec<String>,
    #[arg(long = vars::RECIPIENTS_FILE.flag, value_name = vars::RECIPIENTS_FILE.value_name, help = vars::RECIPIENTS_FILE.help_text())]
    pub recipients_file: Option<PathBuf>,
    #[arg(long = vars::PASSPHRASE_FILE.flag, value_name = vars::PASSPHRASE_FILE.value_name, help = vars::PASSPHRASE_FILE.help_text())]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long = vars::EXCLUDE.flag, value_name = vars::EXCLUDE.value_name, help = vars::EXCLUDE.help_text())]
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
    /// Make a full archive now, whatever BACKUP_FULL_EVERY says
    #[arg(long)]
    pub full: bool,
}

/// Which MongoDB server and databases to dump.
#[derive(Debug, Args, Default)]
pub struct MongoSelect {
    #[arg(long = vars::BACKUP_MONGODB_URI.flag, value_name = vars::BACKUP_MONGODB_URI.value_name, help = vars::BACKUP_MONGODB_URI.help_text())]
    pub mongo_uri: Option<String>,
    #[arg(long = vars::MONGODB_DATABASES.flag, value_name = vars::MONGODB_DATABASES.value_name, help = vars::MONGODB_DATABASES.help_text())]
    pub databases: Vec<String>,
    #[arg(long = vars::MONGODB_COLLECTIONS.flag, value_name = vars::MONGODB_COLLECTIONS.value_name, help = vars::MONGODB_COLLECTIONS.help_text())]
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
    #[arg(long = vars::PASSPHRASE_FILE.flag, value_name = vars::PASSPHRASE_FILE.value_name, help = vars::PASSPHRASE_FILE.help_text())]
    pub passphrase_file: Option<PathBuf>,
}

/// `cofre restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Archive path, a name in BACKUP_DIR (or the bucket, with --remote), `latest`, or s3://BUCKET/PREFIX/NAME
    #[arg(
        value_name = "ARCHIVE",
        required_unless_present_any = ["mongo_dir", "at", "at_op", "before_op"],
        conflicts_with_all = ["at", "at_op", "before_op"]
    )]
    pub archive: Option<String>,
    /// Restore the database as it was at this time (RFC 3339, UTC if no offset), or `latest`: the newest archive before it, then the captured oplog up to it
    #[arg(long, value_name = "TIME", conflicts_with_all = ["at_op", "before_op", "mongo_dir"])]
    pub at: Option<String>,
    /// Restore up to and including this oplog operation (SECONDS,ORDINAL, as `cofre oplog` shows)
    #[arg(long, value_name = "T,I", conflicts_with_all = ["before_op", "mongo_dir"])]
    pub at_op: Option<String>,
    /// Restore up to just before this oplog operation (SECONDS,ORDINAL)
    #[arg(long, value_name = "T,I", conflicts_with = "mongo_dir")]
    pub before_op: Option<String>,
    /// Restore each database under its name with this prefix (beside the live ones)
    #[arg(long, value_name = "PREFIX", conflicts_with = "to_db")]
    pub db_prefix: Option<String>,
    /// Directory to restore files into [default: ./ followed by the archive's name without extensions]
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
    /// Take the archive from the bucket (BACKUP_REMOTE), streaming; an s3:// archive needs no flag
    #[arg(long)]
    pub remote: bool,
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

/// `cofre oplog`.
#[derive(Debug, Args)]
pub struct OplogArgs {
    /// Only operations at or after this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only operations at or before this time (RFC 3339)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this namespace (DB.COLLECTION, or DB for a database's commands)
    #[arg(long, value_name = "DB.COLL")]
    pub ns: Option<String>,
    /// Only this kind: i (insert), u (update), d (delete), c (command), n (no-op)
    #[arg(long, value_name = "KIND")]
    pub op: Option<String>,
    /// Read the slices in the bucket (BACKUP_REMOTE)
    #[arg(long)]
    pub remote: bool,
    /// One JSON object per operation
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// `cofre list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// List the archives in the bucket (BACKUP_REMOTE) instead of BACKUP_DIR
    #[arg(long)]
    pub remote: bool,
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
    /// Read the archive from the bucket (BACKUP_REMOTE), streaming, with no local copy
    #[arg(long)]
    pub remote: bool,
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
    #[arg(long = vars::SCHEDULE.flag, value_name = vars::SCHEDULE.value_name, help = vars::SCHEDULE.help_text())]
    pub schedule: Option<String>,
    /// Stop (as on SIGTERM) when the process that started the daemon dies,
    /// even by SIGKILL: for a daemon run as a child of an application
    /// (Linux: PR_SET_PDEATHSIG)
    #[arg(long)]
    pub exit_with_parent: bool,
}

/// `cofre status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the last successful backup is older than this (e.g. 26h), or there is none
    /// (with BACKUP_REMOTE, the newest offsite copy too)
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Exit 1 when the newest offsite copy is older than this, or the last upload failed
    #[arg(long, value_name = "DURATION")]
    pub max_offsite_age: Option<String>,
    /// Exit 1 when the last successful restore drill is older than this (e.g. 8d), or the last one failed
    #[arg(long, value_name = "DURATION")]
    pub max_drill_age: Option<String>,
    /// Exit 1 when the captured oplog is further behind than this (e.g. 5m), or is not being captured
    #[arg(long, value_name = "DURATION")]
    pub max_oplog_lag: Option<String>,
}

/// `cofre drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Archive path, a name in BACKUP_DIR (or the bucket, with --remote), `latest`, or s3://BUCKET/PREFIX/NAME [default: latest]
    #[arg(value_name = "ARCHIVE")]
    pub archive: Option<String>,
    /// Take the archive from the bucket (BACKUP_REMOTE), streaming
    #[arg(long)]
    pub remote: bool,
    /// Drill an archive that is not signed by a trusted key (with a warning)
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print the drill's record as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub lock: LockArgs,
}

/// `cofre upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {}

/// `cofre keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Write the identity to this file (mode 0600) instead of stdout; never overwrites
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
