export { describePlan } from "../contract/plan.js";
