-- Event ids each consumer group of the order service has applied (effectively-once).
SELECT public.ordermesh_create_inbox('orders');
