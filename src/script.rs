//! Lua scripts: each file under `lua/` is one atomic operation, compiled in with the shared
//! prelude (`lua/prelude.lua`) in front. A script is declared next to the Rust that calls it:
//! `src/mutex.rs` runs `lua/mutex_acquire.lua` as `script!("mutex_acquire")`.

use fred::types::scripts::Script;

/// One compiled-in script: its name (the file stem under `lua/`) and its source + SHA1.
pub(crate) struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) script: Script,
    /// Whether a caller acts on its success (it grants something), so that with
    /// [`Durability`](crate::Durability) its writes must reach replicas before it counts.
    pub(crate) grants: bool,
}

/// The scripts whose success a caller acts on. Releases, revokes and reads are not here:
/// losing a release in a failover only delays the next holder until the lease's TTL.
const GRANTS: &[&str] = &[
    "lease_grant",
    "lease_renew",
    "lease_adopt",
    "mutex_acquire",
    "rwlock_acquire",
    "semaphore_acquire",
    "election_campaign",
    "election_proclaim",
    "kv_put",
    "barrier_hold",
    "dbarrier_enter",
    "queue_push",
];

impl LuaScript {
    pub(crate) fn new(name: &'static str, source: &'static str) -> LuaScript {
        LuaScript {
            name,
            script: Script::from_lua(source),
            grants: GRANTS.contains(&name),
        }
    }
}

/// `script!("mutex_acquire")` is `lua/prelude.lua` + `lua/mutex_acquire.lua`, hashed once.
macro_rules! script {
    ($name:literal) => {{
        static SCRIPT: std::sync::LazyLock<$crate::script::LuaScript> =
            std::sync::LazyLock::new(|| {
                $crate::script::LuaScript::new(
                    $name,
                    concat!(
                        include_str!("../lua/prelude.lua"),
                        include_str!(concat!("../lua/", $name, ".lua"))
                    ),
                )
            });
        &*SCRIPT
    }};
}
pub(crate) use script;
