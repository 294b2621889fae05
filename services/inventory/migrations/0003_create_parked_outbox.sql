-- The relay's parked rows (see public.ordermesh_create_parked_outbox).
SELECT public.ordermesh_create_parked_outbox('inventory');
