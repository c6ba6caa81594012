//! The few calls lrun makes to systemd's manager on the system bus (zbus, blocking on each
//! call). Jobs are waited for by polling the job object until it is gone, then reading the
//! unit's state: no signal subscription, and a plain deadline.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zbus::{Connection, DBusError, OwnedObjectPath, Variant};

use super::props::{Prop, Value};

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// How long a start or stop job may take (runc allows 30 s too).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Bus {
    conn: Connection,
    /// systemd's version (0 if unreadable): newer properties are only sent to newer ones.
    version: u32,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bus")
    }
}

/// The D-Bus error name of a failed call, if it was an error reply.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(f.name().to_string()),
        _ => None,
    }
}

fn is_error(e: &anyhow::Error, name: &str) -> bool {
    e.downcast_ref::<zbus::Error>()
        .and_then(error_name)
        .is_some_and(|n| n == name)
}

fn variant(v: &Value) -> Variant<'_> {
    match v {
        Value::Bool(b) => Variant::from(*b),
        Value::U64(n) => Variant::from(*n),
        Value::Str(s) => Variant::from(s.as_str()),
        Value::U32s(v) => Variant::from(v.clone()),
        Value::Bytes(v) => Variant::from(v.clone()),
        Value::Pairs(v) => Variant::from(v.clone()),
    }
}

impl Bus {
    /// Connect to the system bus and make sure systemd answers there (its version; asked
    /// once per process: `create` connects twice, around its fork).
    pub fn connect() -> Result<Bus> {
        static VERSION: OnceLock<u32> = OnceLock::new();
        let known = VERSION.get().copied();
        let answer = zbus::block_on(async {
            let conn = Connection::system().await?;
            if let Some(v) = known {
                return Ok::<_, zbus::Error>((conn, v));
            }
            let reply = conn
                .call_method(
                    Some(DEST),
                    PATH,
                    Some(PROPERTIES),
                    "Get",
                    &(MANAGER, "Version"),
                )
                .await?;
            let v: zbus::OwnedVariant = reply.body().deserialize()?;
            Ok((
                conn,
                parse_version(&String::try_from(v).unwrap_or_default()),
            ))
        });
        let (conn, version) =
            answer.map_err(|e| anyhow::anyhow!("no systemd answers on the system bus: {e}"))?;
        Ok(Bus {
            conn,
            version: *VERSION.get_or_init(|| version),
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Close the connection and wait (briefly) for the runtime's helper thread to end:
    /// `create` forks without exec, which needs a single-threaded process.
    pub fn close(self) {
        drop(self.conn);
        let deadline = Instant::now() + Duration::from_secs(2);
        while thread_count() > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn call<B>(&self, method: &str, body: &B) -> Result<zbus::Message>
    where
        B: serde::Serialize + zbus::wire::DynamicType,
    {
        zbus::block_on(
            self.conn
                .call_method(Some(DEST), PATH, Some(MANAGER), method, body),
        )
        .map_err(anyhow::Error::from)
    }

    /// StartTransientUnit(name, "replace", props) and wait for its job. A leftover failed unit
    /// of the same name is reset and the start tried once more (as runc does).
    pub fn start_transient(&self, unit: &str, props: &[Prop]) -> Result<()> {
        let list: Vec<(&str, Variant)> = props.iter().map(|(n, v)| (*n, variant(v))).collect();
        let aux: Vec<(&str, Vec<(&str, Variant)>)> = Vec::new();
        let start = || self.call("StartTransientUnit", &(unit, "replace", &list, &aux));
        let reply = match start() {
            Err(e) if is_error(&e, "org.freedesktop.systemd1.UnitExists") => {
                let _ = self.reset_failed(unit);
                start().map_err(|e| {
                    if is_error(&e, "org.freedesktop.systemd1.UnitExists") {
                        anyhow::anyhow!("systemd unit {unit} already exists")
                    } else {
                        e
                    }
                })?
            }
            r => r?,
        };
        let job: OwnedObjectPath = reply.body().deserialize()?;
        self.wait_job(&job)?;
        let state = self.unit_state(unit)?;
        if state != "active" {
            let _ = self.reset_failed(unit);
            bail!("systemd unit {unit} did not start: it is {state}");
        }
        Ok(())
    }

    /// SetUnitProperties(name, runtime=true, props): the change lasts until reboot, like the
    /// transient unit itself.
    pub fn set_properties(&self, unit: &str, props: &[Prop]) -> Result<()> {
        let list: Vec<(&str, Variant)> = props.iter().map(|(n, v)| (*n, variant(v))).collect();
        self.call("SetUnitProperties", &(unit, true, &list))?;
        Ok(())
    }

    /// StopUnit and wait for it; a unit that no longer exists is stopped already (a scope
    /// whose processes are all gone is removed by systemd).
    pub fn stop(&self, unit: &str) -> Result<()> {
        match self.call("StopUnit", &(unit, "replace")) {
            Ok(reply) => {
                let job: OwnedObjectPath = reply.body().deserialize()?;
                self.wait_job(&job)?;
            }
            Err(e) if is_error(&e, "org.freedesktop.systemd1.NoSuchUnit") => return Ok(()),
            Err(e) => return Err(e),
        }
        // A failed unit stays loaded until reset.
        let _ = self.reset_failed(unit);
        Ok(())
    }

    pub fn reset_failed(&self, unit: &str) -> Result<()> {
        self.call("ResetFailedUnit", &(unit,))?;
        Ok(())
    }

    /// The loaded units matching `pattern` that are not inactive (a stopped transient unit
    /// may stay listed a moment before systemd unloads it): (name, description).
    pub fn scopes(&self, pattern: &str) -> Result<Vec<(String, String)>> {
        type Unit = (
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        );
        let states: Vec<&str> = Vec::new();
        let reply = self.call("ListUnitsByPatterns", &(&states, vec![pattern]))?;
        let units: Vec<Unit> = reply.body().deserialize()?;
        Ok(units
            .into_iter()
            .filter(|u| u.3 != "inactive")
            .map(|u| (u.0, u.1))
            .collect())
    }

    /// A unit's ActiveState ("inactive" for one systemd does not know).
    fn unit_state(&self, unit: &str) -> Result<String> {
        Ok(self
            .unit_property(unit, "org.freedesktop.systemd1.Unit", "ActiveState")?
            .unwrap_or_else(|| "inactive".into()))
    }

    /// A scope's ControlGroup (its path in every hierarchy), None if systemd does not know
    /// the unit.
    pub fn control_group(&self, unit: &str) -> Result<Option<String>> {
        self.unit_property(unit, "org.freedesktop.systemd1.Scope", "ControlGroup")
    }

    /// A string property of a loaded unit, None if systemd does not know the unit.
    fn unit_property(&self, unit: &str, iface: &str, name: &str) -> Result<Option<String>> {
        let reply = match self.call("GetUnit", &(unit,)) {
            Ok(r) => r,
            Err(e) if is_error(&e, "org.freedesktop.systemd1.NoSuchUnit") => return Ok(None),
            Err(e) => return Err(e),
        };
        let path: OwnedObjectPath = reply.body().deserialize()?;
        let v: zbus::OwnedVariant = zbus::block_on(self.conn.call_method(
            Some(DEST),
            path.as_str(),
            Some(PROPERTIES),
            "Get",
            &(iface, name),
        ))?
        .body()
        .deserialize()?;
        String::try_from(v)
            .map(Some)
            .with_context(|| format!("{unit} {name} is not a string"))
    }

    /// Wait until the job object is gone (the job finished, whatever its result).
    fn wait_job(&self, job: &OwnedObjectPath) -> Result<()> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        let mut nap = Duration::from_micros(200);
        loop {
            let r = zbus::block_on(self.conn.call_method(
                Some(DEST),
                job.as_str(),
                Some(PROPERTIES),
                "Get",
                &("org.freedesktop.systemd1.Job", "State"),
            ));
            match r {
                Ok(_) => {}
                // The object is gone with the job.
                Err(e) if error_name(&e).is_some() => return Ok(()),
                Err(e) => return Err(e).context("wait for a systemd job"),
            }
            if Instant::now() > deadline {
                bail!("systemd job {} did not finish within 30 s", job.as_str());
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }
}

/// "252.22-1~deb12u1" -> 252 (0 when unreadable: then only the oldest properties are used).
pub fn parse_version(v: &str) -> u32 {
    let v = v.trim_start_matches(['"', 'v']);
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// Threads of this process (/proc/self/stat field 20).
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.get(s.rfind(')')? + 2..)?.to_string();
            rest.split(' ').nth(17)?.parse().ok()
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_runc_reads_them() {
        assert_eq!(parse_version("252.22-1~deb12u1"), 252);
        assert_eq!(parse_version("\"v245.4-1.fc32\""), 245);
        assert_eq!(parse_version("245"), 245);
        assert_eq!(parse_version("junk"), 0);
    }
}
