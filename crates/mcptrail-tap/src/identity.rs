//! Who is running the tap: the OS account and host, and an optional asserted principal.

use mcptrail_event::UserIdentity;

/// Identity facts a stdio tap can establish.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user identity recorded on every event.
    pub user: UserIdentity,
    /// Host name.
    pub host: String,
}

impl Identity {
    /// From the OS, with `asserted` (the value of `MCPTRAIL_USER`) as principal when given.
    pub fn detect(asserted: Option<String>) -> Self {
        let uid = nix::unistd::getuid();
        let os_user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| format!("uid:{uid}"));
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        let asserted = asserted.filter(|s| !s.trim().is_empty());
        let user = UserIdentity {
            principal: asserted.clone().unwrap_or_else(|| os_user.clone()),
            source: if asserted.is_some() { "env" } else { "os" }.into(),
            os_user: Some(os_user),
            os_uid: Some(uid.as_raw()),
            claims: None,
        };
        Identity { user, host }
    }
}
