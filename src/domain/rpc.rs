//! The nine operations of the registry, by name: what metrics, spans and
//! (later) the authorization policy key on.

/// One ServiceRegistry method.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// Register.
    Register,
    /// Heartbeat.
    Heartbeat,
    /// Deregister.
    Deregister,
    /// DiscoverAgents.
    DiscoverAgents,
    /// GetAgent.
    GetAgent,
    /// ListAgents.
    ListAgents,
    /// WatchAgents.
    WatchAgents,
    /// NotifyAgent.
    NotifyAgent,
    /// SubscribeNotifications.
    SubscribeNotifications,
}

impl Rpc {
    /// Every method, in contract order.
    pub const ALL: [Rpc; 9] = [
        Self::Register,
        Self::Heartbeat,
        Self::Deregister,
        Self::DiscoverAgents,
        Self::GetAgent,
        Self::ListAgents,
        Self::WatchAgents,
        Self::NotifyAgent,
        Self::SubscribeNotifications,
    ];

    /// The method name in the contract (`DiscoverAgents`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "Register",
            Self::Heartbeat => "Heartbeat",
            Self::Deregister => "Deregister",
            Self::DiscoverAgents => "DiscoverAgents",
            Self::GetAgent => "GetAgent",
            Self::ListAgents => "ListAgents",
            Self::WatchAgents => "WatchAgents",
            Self::NotifyAgent => "NotifyAgent",
            Self::SubscribeNotifications => "SubscribeNotifications",
        }
    }

    /// The method of a contract name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rpc| rpc.name() == name)
    }

    /// The `operation` label of the latency histogram (`discover_agents`).
    pub fn operation(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Heartbeat => "heartbeat",
            Self::Deregister => "deregister",
            Self::DiscoverAgents => "discover_agents",
            Self::GetAgent => "get_agent",
            Self::ListAgents => "list_agents",
            Self::WatchAgents => "watch_agents",
            Self::NotifyAgent => "notify_agent",
            Self::SubscribeNotifications => "subscribe_notifications",
        }
    }

    /// Whether the method answers with a stream.
    pub fn is_streaming(self) -> bool {
        matches!(self, Self::WatchAgents | Self::SubscribeNotifications)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
        }
        assert_eq!(Rpc::from_name("Check"), None);
    }
}
