import type { AnyCommandDefinition } from './definition.js';

export class CommandRegistry {
  private readonly definitions = new Map<string, AnyCommandDefinition>();

  register(...definitions: AnyCommandDefinition[]): this {
    for (const definition of definitions) {
      if (this.definitions.has(definition.name)) {
        throw new Error(`command ${definition.name} is registered twice`);
      }
      this.definitions.set(definition.name, definition);
    }
    return this;
  }

  get(name: string): AnyCommandDefinition | undefined {
    return this.definitions.get(name);
  }

  names(): string[] {
    return [...this.definitions.keys()].sort();
  }

  all(): AnyCommandDefinition[] {
    return this.names().map((name) => this.definitions.get(name) as AnyCommandDefinition);
  }
}
