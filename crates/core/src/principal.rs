//! Who calls, what they may see (scopes) and what they may do (roles).
//!
//! Every operation belongs to one scope (a folder or project id). A caller
//! sees only operations in its scopes: any other operation is NOT_FOUND to
//! it, exactly like an unknown id, so ids cannot be probed. Within its scopes
//! its roles decide what it may do; a missing role is PERMISSION_DENIED.

use std::collections::BTreeSet;

use crate::error::Error;

/// The scope anonymous callers of a server without authentication use.
pub const DEFAULT_SCOPE: &str = "default";
pub const MAX_SCOPE_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Get, List, Wait, Watch.
    Viewer,
    /// What a viewer may, and Cancel.
    Operator,
    /// The producer API: Create, UpdateMetadata, Heartbeat, Complete.
    Producer,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "producer" => Role::Producer,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Producer => "producer",
            Role::Admin => "admin",
        }
    }
}

/// What a request does, for the role check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    /// The overview: counts and lists over every operation of the caller's scopes.
    Overview,
    Cancel,
    Produce,
}

impl Action {
    fn allowed_by(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (
                    Action::Read | Action::Overview,
                    Role::Viewer | Role::Operator
                )
                | (Action::Cancel, Role::Operator)
                | (Action::Produce, Role::Producer)
        )
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Read => "read operations (viewer)",
            Action::Overview => "read the overview (viewer)",
            Action::Cancel => "cancel operations (operator)",
            Action::Produce => "use the producer api (producer)",
        }
    }
}

/// The scopes a caller may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scopes {
    All,
    Only(BTreeSet<String>),
}

/// The authenticated caller of a request; `created_by` is always its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub scopes: Scopes,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// The caller of a server that has no authentication configured (loopback only).
    pub fn anonymous() -> Self {
        Self {
            id: "anonymous".to_owned(),
            scopes: Scopes::All,
            roles: BTreeSet::from([Role::Admin]),
        }
    }

    pub fn sees(&self, scope: &str) -> bool {
        match &self.scopes {
            Scopes::All => true,
            Scopes::Only(scopes) => scopes.contains(scope),
        }
    }

    pub fn may(&self, action: Action) -> bool {
        self.roles.iter().any(|&role| action.allowed_by(role))
    }

    /// The operation in `scope` (named by `id`) as this caller may touch it for
    /// `action`: NOT_FOUND outside its scopes, PERMISSION_DENIED without the role.
    pub fn authorize(&self, scope: &str, id: &str, action: Action) -> Result<(), Error> {
        if !self.sees(scope) {
            return Err(Error::NotFound { id: id.to_owned() });
        }
        self.require(action)
    }

    /// The role check alone, for requests not about one operation.
    pub fn require(&self, action: Action) -> Result<(), Error> {
        if self.may(action) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} may not {}",
                self.id,
                action.describe()
            )))
        }
    }

    /// The scope a create request lands in: the one asked for, or the
    /// caller's only scope, or the default scope for a caller who sees all.
    pub fn scope_for_create(&self, requested: Option<&str>) -> Result<String, Error> {
        let scope = match (requested, &self.scopes) {
            (Some(scope), _) => scope.to_owned(),
            (None, Scopes::All) => DEFAULT_SCOPE.to_owned(),
            (None, Scopes::Only(scopes)) if scopes.len() == 1 => {
                scopes.iter().next().expect("one scope").clone()
            }
            (None, Scopes::Only(_)) => {
                return Err(Error::invalid_argument(
                    "scope",
                    "is required: the caller has several scopes",
                ));
            }
        };
        validate_scope("scope", &scope)?;
        if !self.sees(&scope) {
            return Err(Error::PermissionDenied(format!(
                "{} may not create operations in scope {scope}",
                self.id
            )));
        }
        Ok(scope)
    }
}

/// 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_scope(field: &str, scope: &str) -> Result<(), Error> {
    if scope.is_empty()
        || scope.len() > MAX_SCOPE_BYTES
        || !scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(Error::invalid_argument(
            field,
            "must be 1-64 characters of [A-Za-z0-9._-]",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Code;

    fn principal(scopes: &[&str], roles: &[Role]) -> Principal {
        Principal {
            id: "svc".into(),
            scopes: Scopes::Only(scopes.iter().map(|s| (*s).to_owned()).collect()),
            roles: roles.iter().copied().collect(),
        }
    }

    #[test]
    fn foreign_scopes_look_like_unknown_ids() {
        let viewer = principal(&["folder-a"], &[Role::Viewer]);
        assert_eq!(viewer.authorize("folder-a", "x", Action::Read), Ok(()));
        let err = viewer.authorize("folder-b", "x", Action::Read).unwrap_err();
        assert_eq!(err, Error::NotFound { id: "x".into() });
        // Even an admin of other scopes learns nothing about this one.
        let admin = principal(&["folder-b"], &[Role::Admin]);
        assert_eq!(
            admin
                .authorize("folder-a", "x", Action::Cancel)
                .unwrap_err()
                .code(),
            Code::NotFound
        );
    }

    #[test]
    fn roles_grant_exactly_their_actions() {
        let table = [
            (Role::Viewer, [true, true, false, false]),
            (Role::Operator, [true, true, true, false]),
            (Role::Producer, [false, false, false, true]),
            (Role::Admin, [true, true, true, true]),
        ];
        let actions = [
            Action::Read,
            Action::Overview,
            Action::Cancel,
            Action::Produce,
        ];
        for (role, expected) in table {
            let p = principal(&["f"], &[role]);
            let got = actions.map(|a| p.may(a));
            assert_eq!(got, expected, "{role:?}");
            for (action, allowed) in actions.into_iter().zip(expected) {
                let result = p.authorize("f", "x", action);
                assert_eq!(result.is_ok(), allowed);
                if !allowed {
                    assert_eq!(result.unwrap_err().code(), Code::PermissionDenied);
                }
            }
        }
    }

    #[test]
    fn create_scopes_default_only_when_unambiguous() {
        let one = principal(&["folder-a"], &[Role::Producer]);
        assert_eq!(one.scope_for_create(None).unwrap(), "folder-a");
        assert_eq!(
            one.scope_for_create(Some("folder-b")).unwrap_err().code(),
            Code::PermissionDenied
        );
        let two = principal(&["a", "b"], &[Role::Producer]);
        assert_eq!(
            two.scope_for_create(None).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(two.scope_for_create(Some("b")).unwrap(), "b");
        assert_eq!(
            Principal::anonymous().scope_for_create(None).unwrap(),
            DEFAULT_SCOPE
        );
        assert_eq!(
            Principal::anonymous()
                .scope_for_create(Some("bad scope!"))
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
    }
}
