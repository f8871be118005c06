//! Local agora networks. Process management arrives with the node issue.
