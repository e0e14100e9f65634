-- The shape of a task's webhook body: NULL for the task event (`image.task.*`), or the name of
-- the shape of the route that submitted it (a drop-in door answers in its service's shape).
ALTER TABLE tasks ADD COLUMN callback_format TEXT;
