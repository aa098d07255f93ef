//! Where values come from: flags, the environment and the project's
//! `.env`, as raw strings, and the precedence between them (flag >
//! environment > `.env` > default). Nothing here parses a value.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::ConfigError;
use crate::vars::{self, Var};

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The process environment.
    Env,
    /// The project's `.env` file.
    DotEnv,
}

/// The raw strings from every origin, before any validation.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// Values given by flags, keyed by the variable they stand for.
    pub flags: HashMap<String, String>,
    /// List values given by repeatable flags (excludes, recipients).
    pub flag_lists: HashMap<String, Vec<String>>,
    /// The process environment.
    pub env: HashMap<String, String>,
    /// The `.env` file of the project, when there is one.
    pub dotenv: HashMap<String, String>,
    /// The directory the `.env` was read from (relative paths in it resolve there).
    pub dotenv_dir: Option<PathBuf>,
    /// The current directory.
    pub cwd: PathBuf,
    /// The home directory, for the default identity file.
    pub home: Option<PathBuf>,
}

impl Sources {
    /// Collects the environment and the current directory; flags are added by
    /// the caller, then [`Sources::load_dotenv`] reads the project's `.env`.
    pub fn from_process() -> std::io::Result<Self> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Ok(Sources {
            env,
            cwd: std::env::current_dir()?,
            home: std::env::var_os("HOME").map(PathBuf::from),
            ..Default::default()
        })
    }

    /// Adds a flag value for its setting, when given.
    pub fn flag(&mut self, var: &Var, value: Option<impl Into<OsString>>) {
        if let Some(v) = value {
            let v: OsString = v.into();
            self.flags
                .insert(var.name.to_owned(), v.to_string_lossy().into_owned());
        }
    }

    /// Adds a repeatable flag's values for its setting, when any.
    pub fn flag_list(&mut self, var: &Var, values: &[String]) {
        if !values.is_empty() {
            self.flag_lists.insert(var.name.to_owned(), values.to_vec());
        }
    }

    /// The value of `var` and where it came from; its literal default when
    /// nothing sets it.
    pub(super) fn value(&self, var: &Var) -> Option<&str> {
        self.get(var).map(|(v, _)| v).or(var.default_value())
    }

    pub(super) fn get(&self, var: &Var) -> Option<(&str, Origin)> {
        self.get_named(var.name)
    }

    pub(super) fn get_named(&self, var: &str) -> Option<(&str, Origin)> {
        fn nonempty<'m>(m: &'m HashMap<String, String>, var: &str) -> Option<&'m str> {
            m.get(var)
                .map(String::as_str)
                .filter(|v| !v.trim().is_empty())
        }
        if let Some(v) = nonempty(&self.flags, var) {
            return Some((v, Origin::Flag));
        }
        // A variable set in the environment wins over `.env` even when it is
        // empty: `MONGODB_URI= cofre backup` turns the database dump off.
        if self.env.contains_key(var) {
            return nonempty(&self.env, var).map(|v| (v, Origin::Env));
        }
        nonempty(&self.dotenv, var).map(|v| (v, Origin::DotEnv))
    }

    pub(super) fn list(&self, var: &Var) -> Vec<String> {
        if let Some(values) = self.flag_lists.get(var.name) {
            return values.clone();
        }
        self.get(var)
            .map(|(v, _)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A path setting, made absolute: a flag's relative to the current
    /// directory, the environment's to the project, the `.env`'s to its
    /// directory.
    pub(super) fn path(&self, var: &Var, source: &Path) -> Option<PathBuf> {
        self.get(var).map(|(v, origin)| {
            let base = match origin {
                Origin::Flag => self.cwd.clone(),
                Origin::Env => source.to_path_buf(),
                Origin::DotEnv => self
                    .dotenv_dir
                    .clone()
                    .unwrap_or_else(|| source.to_path_buf()),
            };
            absolute(&base, Path::new(v))
        })
    }

    /// The project directory as flags and environment give it (the `.env`
    /// lives there, so it cannot come from the `.env` itself, except as a
    /// fallback when nothing else names one).
    pub(super) fn source_dir(&self) -> PathBuf {
        match self.get(&vars::SOURCE) {
            Some((v, Origin::DotEnv)) => absolute(
                self.dotenv_dir.as_deref().unwrap_or(&self.cwd),
                Path::new(v),
            ),
            Some((v, _)) => absolute(&self.cwd, Path::new(v)),
            None => self.cwd.clone(),
        }
    }

    /// Reads `<project>/.env` when it exists. Its values never override the
    /// environment or flags.
    pub fn load_dotenv(&mut self) -> Result<(), ConfigError> {
        let dir = self.source_dir();
        let path = dir.join(".env");
        if !path.is_file() {
            return Ok(());
        }
        let iter = dotenvy::from_path_iter(&path).map_err(|e| ConfigError::DotEnv {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for item in iter {
            let (k, v) = item.map_err(|e| ConfigError::DotEnv {
                path: path.clone(),
                message: e.to_string(),
            })?;
            self.dotenv.insert(k, v);
        }
        self.dotenv_dir = Some(dir);
        Ok(())
    }
}

pub(super) fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
