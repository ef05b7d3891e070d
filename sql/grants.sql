-- Privileges of the application roles, applied after every `migrator up`
-- (idempotent). ${checkout_role} and ${backup_role} are replaced by the role
-- names from configuration (roles.checkout, roles.backup), quoted.
--
-- checkout: read and write orders, append events; no DDL, no DELETE.
-- backup:   read everything it backs up, write nothing.

GRANT USAGE ON SCHEMA public TO ${checkout_role}, ${backup_role};

GRANT SELECT, INSERT, UPDATE ON orders, order_items TO ${checkout_role};
GRANT SELECT, INSERT ON order_events TO ${checkout_role};
GRANT SELECT ON schema_migrations TO ${checkout_role};
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${checkout_role};

GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${backup_role};
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO ${backup_role};
