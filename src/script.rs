//! Lua scripts: each file under `lua/` is one atomic operation, compiled in with the shared
//! preludes (`lua/prelude.lua`, `lua/prelude_queues.lua`) in front. A script is declared next
//! to the Rust that calls it: `src/kv.rs` runs `lua/kv_put.lua` as `script!("kv_put")`.

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

/// `script!("election_campaign")` is `lua/prelude.lua` + `lua/prelude_queues.lua` +
/// `lua/election_campaign.lua`, hashed once. `script!(core "mutex_acquire")` leaves out the
/// queue prelude: Redis runs a script's whole text on every call, so the lock hot path
/// (`mutex_acquire`, `mutex_release`) carries only the helpers it uses.
macro_rules! script {
    ($name:literal) => {
        $crate::script::script!(@build $name, concat!(
            include_str!("../lua/prelude.lua"),
            include_str!("../lua/prelude_queues.lua"),
            include_str!(concat!("../lua/", $name, ".lua"))
        ))
    };
    (core $name:literal) => {
        $crate::script::script!(@build $name, concat!(
            include_str!("../lua/prelude.lua"),
            include_str!(concat!("../lua/", $name, ".lua"))
        ))
    };
    // A dispatcher that runs several calls of the `$op` scripts in one script call: the core
    // prelude, each `$op` wrapped as `local function $op(KEYS, ARGV)`, then `lua/$name.lua`.
    (batch $name:literal [$($op:literal),+]) => {
        $crate::script::script!(@build $name, concat!(
            include_str!("../lua/prelude.lua"),
            $("local function ", $op, "(KEYS, ARGV)\n",
              include_str!(concat!("../lua/", $op, ".lua")),
              "\nend\n",)+
            include_str!(concat!("../lua/", $name, ".lua"))
        ))
    };
    (@build $name:literal, $source:expr) => {{
        static SCRIPT: std::sync::LazyLock<$crate::script::LuaScript> =
            std::sync::LazyLock::new(|| $crate::script::LuaScript::new($name, $source));
        &*SCRIPT
    }};
}
pub(crate) use script;
