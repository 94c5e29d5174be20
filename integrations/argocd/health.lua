-- Argo CD health of the kappa.dev kinds (KafkaClusterSet, Pipeline,
-- Savepoint, Backfill), read from the conditions the operator writes:
-- Progressing until the operator has acted on the current generation or
-- while it reconciles (a Backfill runs, a move is under way); Degraded when
-- it is Stalled (the spec must change) or a run failed; Suspended for a
-- suspended Pipeline; Healthy when Ready. One script serves the four kinds.
local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function said(c)
  return c.reason .. ": " .. (c.message or "")
end

local generation = obj.metadata.generation or 0
local observed = obj.status ~= nil and obj.status.observedGeneration or nil
if observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end

local stalled = condition("Stalled")
local ready = condition("Ready")
local reconciling = condition("Reconciling")
local degraded = condition("Degraded")
local phase = obj.status.phase

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = said(stalled)
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = ready ~= nil and said(ready) or "Failed"
elseif obj.kind == "Pipeline" and obj.spec ~= nil and obj.spec.state == "suspended" and is_true(ready) then
  hs.status = "Suspended"
  hs.message = said(ready)
elseif is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = said(reconciling)
elseif is_true(ready) then
  hs.status = "Healthy"
  hs.message = said(ready)
elseif is_true(degraded) then
  hs.status = "Degraded"
  hs.message = said(degraded)
else
  hs.status = "Progressing"
  hs.message = ready ~= nil and said(ready) or "Waiting for the operator"
end
return hs
