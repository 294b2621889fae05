-- Which kind of method charged (or was refused for) the order: a test card token, or one of
-- the method names of the original API's clients. NULL for an invalid method, and for
-- payments recorded before the column existed.
ALTER TABLE payment.payments
    ADD COLUMN method_family text
        CHECK (method_family IN ('card_token', 'credit_card', 'debit_card', 'paypal'));
